"""Scanner vendor names, normalised so that "SIEMENS", "Siemens Healthineers" and M&Ms' "A" agree."""
from __future__ import annotations

VENDORS = ("Siemens", "Philips", "GE", "Canon")
# M&Ms codes its vendors by letter (Campello et al. 2021, M&Ms challenge paper, Table 1).
MNMS_VENDOR_LETTERS = {"A": "Siemens", "B": "Philips", "C": "GE", "D": "Canon"}
_PREFIXES = {
    "siemens": "Siemens",
    "philips": "Philips",
    "ge": "GE",
    "general electric": "GE",
    "canon": "Canon",
    "toshiba": "Canon",  # Toshiba Medical became Canon Medical Systems in 2018
}


def normalise_vendor(text: str | None) -> str:
    """Map a free-text manufacturer to one of VENDORS, else "unknown"."""
    words = " ".join(str(text or "").lower().replace("_", " ").split())
    for prefix, name in _PREFIXES.items():
        if words == prefix or words.startswith(prefix + " "):
            return name
    return "unknown"
