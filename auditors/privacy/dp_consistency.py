"""DP consistency: an attack may never prove more leakage than the privacy ledger accounts for.

A model trained with (epsilon, delta)-DP cannot be attacked with an empirical epsilon lower bound above
epsilon, whatever the attack; a valid lower bound above the accounted epsilon is a proof that the DP
implementation (clipping, noise, sampling, accounting, or the patient as the privacy unit) is broken.
"""
from __future__ import annotations

import math

from auditors.base import Check

CHECK = "privacy.dp_consistency"
DEFAULT_DELTA = 1e-5  # the delta used for epsilon lower bounds when the model card states none


def privacy_section(model_card: dict | None) -> dict:
    section = (model_card or {}).get("privacy") or {}
    return section if isinstance(section, dict) else {}


def dp_declared(model_card: dict | None) -> bool:
    return bool(privacy_section(model_card).get("dp"))


def accounted_epsilon(model_card: dict | None) -> float | None:
    """The ledger's epsilon; with several accountants the largest counts. None when the card states none."""
    section = privacy_section(model_card)
    candidates = [section.get("epsilon")]
    ledger = section.get("ledger")
    if isinstance(ledger, dict):
        candidates += [ledger.get("epsilon"), *(v for k, v in ledger.items() if k.startswith("epsilon_"))]
    candidates += [v for k, v in section.items() if k.startswith("epsilon_")]
    values = [float(v) for v in candidates if isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(float(v))]
    return max(values) if values else None


def model_delta(model_card: dict | None) -> float:
    delta = privacy_section(model_card).get("delta")
    if isinstance(delta, (int, float)) and not isinstance(delta, bool) and 0 < float(delta) < 1:
        return float(delta)
    return DEFAULT_DELTA


def dp_consistency_check(model_card: dict | None, epsilon_lower_bound: float, attack: str) -> Check | None:
    """None for a model that does not claim DP; else the check `empirical epsilon lower bound <= accounted epsilon`."""
    if not dp_declared(model_card):
        return None
    accounted = accounted_epsilon(model_card)
    description = ("the strongest attack's empirical epsilon lower bound stays within the accounted epsilon; "
                   "exceeding it means the DP implementation is broken")
    if accounted is None:
        # Fail closed: a model that claims DP without an epsilon cannot be checked.
        return Check(name=CHECK, estimate=None, threshold=0.0, op="<=", description=description,
                     details="the model card declares DP but states no accounted epsilon")
    # The audit's epsilon is itself a lower bound: showing it above the accounted epsilon proves a broken
    # implementation; it can never prove the implementation right, so the check is exact on that bound.
    check = Check.exact(CHECK, float(epsilon_lower_bound), accounted, "<=", description=description)
    verb = "exceeds" if not check.passed else "is within"
    check.details = (f"empirical epsilon lower bound {epsilon_lower_bound:.3f} ({attack}) {verb} the accounted "
                     f"epsilon {accounted:.3f}" + ("; the DP implementation is broken" if not check.passed else ""))
    return check
