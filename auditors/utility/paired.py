"""Per-patient Dice and paired patient-level intervals: the statistics of every utility check.

Two segmenters are compared on the SAME real test patients, so each patient gives one paired
difference (or one pair for a ratio) and the patient, never the slice, is the resampling unit: slices
of one patient are correlated, and a slice bootstrap would make the intervals far too narrow.

- A patient's Dice for a structure is the 3D Dice of its stack in each annotated phase (ED, ES), averaged
  over the phases (the ACDC convention); a structure absent from both prediction and reference in a phase
  is left out. A patient's score is the mean over the structures it has.
- Intervals are BCa bootstraps over patients (`scipy.stats.bootstrap`, paired for ratios), each bound
  one-sided at `confidence` (the central interval at 2 * confidence - 1).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from auditors.segmentation import metrics
from cmri_release.core.sliceset import SliceSet

STRUCTURES = tuple(metrics.STRUCTURE_LABELS)


@dataclass(frozen=True)
class PatientDice:
    """Dice per test patient: `subjects` (P,), `by_structure` {structure: (P,)}, `mean` (P,), `vendors` (P,)."""
    subjects: tuple[str, ...]
    vendors: np.ndarray
    by_structure: dict[str, np.ndarray]
    mean: np.ndarray

    def select(self, keep: np.ndarray) -> "PatientDice":
        keep = np.asarray(keep, bool)
        return PatientDice(tuple(np.asarray(self.subjects)[keep].tolist()), self.vendors[keep],
                           {k: v[keep] for k, v in self.by_structure.items()}, self.mean[keep])

    def summary(self) -> dict:
        """Means over patients: per structure, overall ("mean") and per vendor."""
        out = {"dice": {**{k: metrics.nanmean(v) for k, v in self.by_structure.items()},
                        "mean": metrics.nanmean(self.mean)}, "patients": len(self.subjects), "by_vendor": {}}
        for vendor in sorted(set(self.vendors.tolist())):
            sel = self.vendors == vendor
            out["by_vendor"][vendor] = {**{k: metrics.nanmean(v[sel]) for k, v in self.by_structure.items()},
                                        "mean": metrics.nanmean(self.mean[sel]), "patients": int(sel.sum())}
        return out


def patient_dice(pred: np.ndarray, test: SliceSet) -> PatientDice:
    """Per-patient Dice of predicted (N, H, W) label maps against the annotated slices `test` (same order)."""
    if pred.shape != test.labels.shape:
        raise ValueError(f"predictions {pred.shape} and test labels {test.labels.shape} differ in shape")
    subjects = test.subjects
    vendor_of = test.subject_vendor()
    per = {name: np.full(len(subjects), np.nan) for name in STRUCTURES}
    for p, sid in enumerate(subjects):
        in_subject = test.subject_ids == sid
        for name, k in metrics.STRUCTURE_LABELS.items():
            phases = [metrics.dice(pred[sel] == k, test.labels[sel] == k)
                      for sel in (in_subject & (test.phases == ph) for ph in np.unique(test.phases[in_subject]))]
            per[name][p] = metrics.nanmean(phases)
    stacked = np.stack([per[name] for name in STRUCTURES], axis=1)
    with warnings.catch_warnings():  # a patient without any structure (never in a cardiac cohort) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stacked, axis=1)
    return PatientDice(tuple(subjects), np.array([vendor_of[s] for s in subjects]), per, mean)


@dataclass(frozen=True)
class Interval:
    estimate: float
    lower: float
    upper: float
    n: int
    sd: float  # SD over patients of the paired differences (of the per-patient ratio terms for a ratio)

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "lower": self.lower, "upper": self.upper, "patients": self.n,
                "paired_sd": self.sd}


def _finite_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _bootstrap(data: tuple, statistic, confidence: float, n_resamples: int, seed: int, paired: bool):
    with warnings.catch_warnings():  # degenerate data: handled by the caller (NaN bounds fail closed)
        warnings.simplefilter("ignore")
        res = stats.bootstrap(data, statistic, paired=paired, vectorized=True, axis=-1,
                              confidence_level=2 * confidence - 1, n_resamples=n_resamples, method="BCa",
                              random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # BCa undefined (e.g. a tiny sample): percentile
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(data, statistic, paired=paired, vectorized=True, axis=-1,
                                  confidence_level=2 * confidence - 1, n_resamples=n_resamples,
                                  method="percentile", random_state=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return lo, hi


def paired_difference(a, b, confidence: float = 0.95, n_resamples: int = 4000, seed: int = 0) -> Interval:
    """Mean over patients of a - b with one-sided `confidence` bounds from a patient bootstrap.

    Patients where either score is undefined are left out. Fewer than 2 patients: NaN bounds (the check
    then fails closed). All differences equal: the interval is that value (no sampling spread to show).
    """
    a, b = _finite_pairs(a, b)
    d = a - b
    if len(d) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, float("nan"))
    est = float(d.mean())
    if len(d) < 2:
        return Interval(est, float("nan"), float("nan"), 1, float("nan"))
    sd = float(d.std(ddof=1))
    if np.ptp(d) == 0:
        return Interval(est, est, est, len(d), 0.0)
    lo, hi = _bootstrap((d,), lambda x, axis=-1: x.mean(axis=axis), confidence, n_resamples, seed, paired=False)
    return Interval(est, lo, hi, len(d), sd)


def paired_ratio(a, b, confidence: float = 0.95, n_resamples: int = 4000, seed: int = 0) -> Interval:
    """mean(a) / mean(b) over the same patients, bounds from a paired patient bootstrap."""
    a, b = _finite_pairs(a, b)
    if len(a) == 0 or b.mean() <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), len(a), float("nan"))
    est = float(a.mean() / b.mean())
    # The delta-method terms of a ratio of means: their SD over patients is the ratio's paired spread.
    sd = float(((a - est * b) / b.mean()).std(ddof=1)) if len(a) > 1 else float("nan")
    if len(a) < 2:
        return Interval(est, float("nan"), float("nan"), 1, sd)
    if np.ptp(a - est * b) == 0:
        return Interval(est, est, est, len(a), 0.0)

    def ratio(x, y, axis=-1):
        return x.mean(axis=axis) / y.mean(axis=axis)

    lo, hi = _bootstrap((a, b), ratio, confidence, n_resamples, seed, paired=True)
    return Interval(est, lo, hi, len(a), sd)


def z(p: float) -> float:
    return float(stats.norm.ppf(p))


def pass_probability(expected: float, threshold: float, sd: float, n: int, op: str, confidence: float) -> float:
    """Chance that the safe-side bound of the mean of n paired patient terms (SD `sd`, mean `expected`) lands
    inside the threshold: normal approximation of the bootstrap interval."""
    if n < 2 or not sd > 0:
        return float("nan")
    se = sd / math.sqrt(n)
    margin = (expected - threshold) if op == ">=" else (threshold - expected)
    return float(stats.norm.cdf(margin / se - z(confidence)))


def smallest_detectable(sd: float, n: int, confidence: float, power: float = 0.8) -> float:
    """The distance between the true value and the threshold that the interval resolves (its bound on the
    far side of the threshold) with probability `power`."""
    if n < 2 or not sd > 0:
        return float("nan")
    return (z(confidence) + z(power)) * sd / math.sqrt(n)


def patients_needed(distance: float, sd: float, confidence: float, power: float = 0.8) -> int | None:
    """Test patients for a true value `distance` from the threshold to be decided with probability `power`."""
    if not distance or not math.isfinite(distance) or not sd > 0:
        return None
    return max(2, int(math.ceil(((z(confidence) + z(power)) * sd / abs(distance)) ** 2)))
