"""Per-vendor metadata for a DP model: public defaults, not statistics of the patients.

The plain model keeps, per vendor, medians over its patients of the intensity mapping, slice thickness, frame count
and ES frame, and the vendor mix; with a handful of patients per vendor those are close to one patient's values, and
a DP median over unbounded scanner units would be mostly noise. So a DP model spends no budget here: synthetic
subjects get the synthesis defaults (images left in the normalised [0, 1] range, 8 mm slices, 25 frames) and an
even vendor mix. The vendor names themselves are the cohort's schema.
"""
from __future__ import annotations


def public_vendor_statistics(vendors: list[str]) -> dict:
    return {"vendors": {v: {"n_subjects": 1} for v in vendors}, "population": {},
            "source": "public defaults (differential privacy: no patient statistics)"}
