"""The utility checks' defaults and cohort-size planning: how likely an honest generator passes, and how small
a shortfall the test split resolves, at given cohort sizes.

Planning needs what an honest generator scores and how much that score spreads. Both were measured on the
phantom at the demo's size (docs/fidelity-utility-checks.md, "Measured"; benchmarks/bench_utility.py) with
fresh phantom patients standing in for a perfect generator:
- `honest`: the figure's mean over seeds;
- `patient_sd`: the SD over test patients of the paired per-patient terms (what the bootstrap resamples);
- `run_sd`: the spread between audits of the same cohorts with other segmenter seeds (training noise the
  patient bootstrap cannot see, and which the honest pass probability must include).
An audit passes its measured paired SD instead of the planning one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from auditors.base import CohortSizes

from . import paired

DEFAULT_THRESHOLDS = {
    "utility.tstr_dice_ratio": (0.9, ">=", "mean Dice on real test patients of a segmenter trained on synthetic "
                                           "slices only, over the same for one trained on real train (paired)"),
    "utility.mixed_dice_gain": (-0.04, ">=", "Dice gain on real test patients of real train + synthetic over real "
                                             "train alone: adding the synthetic cohort must not hurt"),
    "utility.low_data_dice_gain": (-0.03, ">=", "Dice gain of a fifth of the real train patients + synthetic over "
                                                "that fifth alone: the synthetic cohort must not hurt where data is "
                                                "scarce"),
    "utility.lovo_dice_gain": (-0.05, ">=", "Dice gain on vendor V of real train without V + synthetic V over "
                                            "real train without V, the worst vendor"),
}
PLANNING_VENDORS = 3  # the phantom's and M&Ms' vendors: a leave-one-vendor-out figure has a third of the test split


@dataclass(frozen=True)
class Assumption:
    honest: float
    patient_sd: float
    run_sd: float


# Measured at the demo's size (100 train / 40 test / 100 synthetic phantom patients, 32 px, 300-400 steps per
# segmenter), seeds 0-2 (benchmarks/README.md): the mean estimate over seeds, the mean paired SD over patients, the
# SD over seeds. LOVO takes its worst vendor's mean (Siemens, +0.004; GE +0.044, Philips +0.029) and the SD over
# seeds pooled within vendors (GE 0.023, Philips 0.011, Siemens 0.003).
ASSUMPTIONS = {
    "utility.tstr_dice_ratio": Assumption(honest=1.005, patient_sd=0.032, run_sd=0.025),
    "utility.mixed_dice_gain": Assumption(honest=0.004, patient_sd=0.019, run_sd=0.013),
    "utility.low_data_dice_gain": Assumption(honest=0.004, patient_sd=0.025, run_sd=0.009),
    "utility.lovo_dice_gain": Assumption(honest=0.004, patient_sd=0.025, run_sd=0.015),
}


def _test_patients(name: str, sizes: CohortSizes) -> int:
    n = sizes.test or sizes.holdout  # the audit tests on the holdout when no test split is given
    return n // PLANNING_VENDORS if name == "utility.lovo_dice_gain" else n


def plan_one(name: str, sizes: CohortSizes, threshold: float, confidence: float,
             measured_sd: float | None = None) -> dict:
    """Planning figures of one utility check at these sizes (see the module docstring)."""
    a = ASSUMPTIONS[name]
    op = DEFAULT_THRESHOLDS[name][1]
    sd = measured_sd if measured_sd is not None and math.isfinite(measured_sd) and measured_sd > 0 else a.patient_sd
    n = _test_patients(name, sizes)
    out = {"test_patients": n, "paired_sd": round(sd, 4), "assumed_honest_value": a.honest,
           "detectable_unit": ("ratio below the threshold" if name.endswith("ratio") else
                               "Dice points (0-1) below the threshold")}
    if n < 2:
        return {**out, "honest_pass_probability": 0.0, "smallest_detectable": float("nan")}
    se = sd / math.sqrt(n)
    # The safe-side bound is the estimate minus z * se; the estimate spreads by se (patients) and run_sd (training).
    margin = (a.honest - threshold) if op == ">=" else (threshold - a.honest)
    p_one = float(stats.norm.cdf((margin - paired.z(confidence) * se) / math.hypot(se, a.run_sd)))
    parts = PLANNING_VENDORS if name == "utility.lovo_dice_gain" else 1
    return {**out, "honest_pass_probability": round(p_one ** parts, 4),
            "smallest_detectable": round(paired.smallest_detectable(sd, n, confidence), 4)}
