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


def dp_consistency_check(model_card: dict | None, epsilon: dict, attack: str) -> Check | None:
    """None for a model that does not claim DP; else `the attack's epsilon <= the accounted epsilon`.

    `epsilon` is mia_stats.epsilon_summary of the gated attack: a lower bound (fail: the attack proves more leakage
    than the ledger allows, so the DP implementation is broken), the point estimate and the upper bound at the
    planned operating point (pass: the attack is shown to stay within the ledger), and the largest epsilon the
    cohort could show at all. When that largest value is below the accounted epsilon the check cannot fail on this
    cohort, and says so."""
    if not dp_declared(model_card):
        return None
    accounted = accounted_epsilon(model_card)
    description = ("the gated attack's empirical epsilon stays within the accounted epsilon; a lower bound above it "
                   "means the DP implementation is broken")
    if accounted is None:
        # Fail closed: a model that claims DP without an epsilon cannot be checked.
        return Check(name=CHECK, estimate=None, threshold=0.0, op="<=", description=description,
                     details="the model card declares DP but states no accounted epsilon")
    low, point, high = epsilon["epsilon_lower_bound"], epsilon["epsilon_point"], epsilon["epsilon_upper_bound"]
    showable = epsilon["largest_showable_epsilon"]
    details = (f"{attack}: empirical epsilon {point:.3f}, lower bound {low:.3f}, upper bound {high:.3f}, against the "
               f"accounted {accounted:.3f}; the most this cohort can show is {showable:.3f}")
    if low > accounted:
        details += "; the attack proves more leakage than the ledger: the DP implementation is broken"
    elif showable <= accounted:
        details += ("; this cohort cannot show a violation of the ledger at all (a perfect attack would prove only "
                    f"{showable:.3f})")
    return Check(CHECK, estimate=point, threshold=accounted, op="<=", lower=low, upper=high, confidence=0.95,
                 description=description, details=details,
                 decide="more training and holdout patients raise the most a cohort can show and narrow the bounds")
