"""ACDC's `Info.cfg`: one `Key: value` per line.

ACDC writes `ED`, `ES`, `Group`, `Height`, `NbFrame`, `Weight`; the project adds `Vendor` and
`Centre`. Only `ED` and `ES` are required (without them the frame files cannot be found); the
others are optional, but a value that is present must parse. Keys outside this list are refused
rather than carried along, so that nothing unexpected (an identifier, say) rides into a release.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError

REQUIRED_KEYS = ("ED", "ES")
KEY_ORDER = ("ED", "ES", "Group", "Height", "NbFrame", "Weight", "Vendor", "Centre")
_MAX_BYTES = 64 * 1024  # an Info.cfg is a few lines; refuse anything that is clearly not one


@dataclass
class InfoCfg:
    ed: int  # 1-based frame numbers, as ACDC counts
    es: int
    group: str = "unknown"
    height: float | None = None  # cm
    weight: float | None = None  # kg
    n_frames: int | None = None
    vendor: str = "unknown"
    centre: str = "unknown"


def parse_key_values(path: Path) -> dict[str, str]:
    """`Key: value` lines -> dict; refuses binary, malformed lines, unknown and repeated keys."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    raw = path.read_bytes()
    if len(raw) > _MAX_BYTES:
        raise InputError(path, f"{len(raw)} bytes is too large for an Info.cfg")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not a text file") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise InputError(path, f"line {number} is not 'Key: value'")
        if key not in KEY_ORDER:
            raise InputError(path, f"unknown key {key!r} on line {number} (allowed: {', '.join(KEY_ORDER)})")
        if key in values:
            raise InputError(path, f"key {key!r} given twice")
        values[key] = value
    return values


def _integer(path, key, value) -> int:
    try:
        number = float(value)
    except ValueError:
        raise InputError(path, f"{key} must be a whole number, got {value!r}") from None
    if not number.is_integer() or number < 1:
        raise InputError(path, f"{key} must be a whole number >= 1, got {value!r}")
    return int(number)


def _positive(path, key, value) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InputError(path, f"{key} must be a number, got {value!r}") from None
    if not (number > 0 and number < 1e4):  # also rejects nan/inf
        raise InputError(path, f"{key} must be a positive number, got {value!r}")
    return number


def read_info_cfg(path) -> InfoCfg:
    path = Path(path)
    values = parse_key_values(path)
    for key in REQUIRED_KEYS:
        if key not in values:
            raise InputError(path, f"missing required key {key!r}")
    info = InfoCfg(ed=_integer(path, "ED", values["ED"]), es=_integer(path, "ES", values["ES"]))
    if info.ed == info.es:
        raise InputError(path, f"ED and ES are the same frame ({info.ed})")
    if "NbFrame" in values:
        info.n_frames = _integer(path, "NbFrame", values["NbFrame"])
        if max(info.ed, info.es) > info.n_frames:
            raise InputError(path, f"ED/ES frame {max(info.ed, info.es)} is beyond NbFrame {info.n_frames}")
    if "Height" in values:
        info.height = _positive(path, "Height", values["Height"])
    if "Weight" in values:
        info.weight = _positive(path, "Weight", values["Weight"])
    for key in ("Group", "Vendor", "Centre"):
        if values.get(key):
            setattr(info, key.lower(), values[key])
    return info


def format_info_cfg(info: InfoCfg) -> str:
    values = {"ED": info.ed, "ES": info.es, "Group": info.group, "Height": info.height,
              "NbFrame": info.n_frames, "Weight": info.weight, "Vendor": info.vendor, "Centre": info.centre}
    lines = []
    for key in KEY_ORDER:
        value = values[key]
        if value is None:
            continue
        text = str(value)
        if "\n" in text or "\r" in text or not text.strip():
            raise ValueError(f"Info.cfg value for {key} must be one non-empty line, got {text!r}")
        lines.append(f"{key}: {text}")
    return "\n".join(lines) + "\n"


def write_info_cfg(path, info: InfoCfg) -> Path:
    path = Path(path)
    path.write_text(format_info_cfg(info), encoding="utf-8")
    return path
