"""Patient-level intervals for fidelity ratios, and the planning figures that go with them.

Every fidelity check compares the synthetic cohort with the real holdout, both against train. The
unit resampled is the patient: a bootstrap draws synthetic and holdout patients with replacement,
independently, recomputes the statistic and reads the one-sided bounds (each at `CONFIDENCE`) from
the percentiles of the replicates. The statistic is given per-patient weights (how many times each
patient was drawn), so a replicate costs a weighted mean, not a recomputation from pixels.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.stats import norm

CONFIDENCE = 0.95  # each bound one-sided at 95% (a 90% two-sided interval)
DETECT_POWER = 0.80  # the `smallest_detectable` fault is failed with this probability


def patient_index(subject_ids) -> tuple[np.ndarray, np.ndarray]:
    """(unique patients in order of first appearance, per-slice patient number)."""
    ids = np.asarray(subject_ids)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return ids[np.sort(first)], rank[inverse]


def bootstrap_weights(n_patients: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(replicates, n_patients) multiplicities of a patient bootstrap (each row sums to n_patients)."""
    return rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=replicates).astype(np.float64)


def bounds(replicates, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """One-sided percentile bounds at `confidence` each; NaN when no replicate is finite."""
    arr = np.asarray(replicates, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(np.percentile(arr, 100 * (1 - confidence))), float(np.percentile(arr, 100 * confidence))


def ratio_of_means(syn: np.ndarray, real: np.ndarray, replicates: int, rng: np.random.Generator,
                   confidence: float = CONFIDENCE) -> dict:
    """mean(syn) / mean(real) of per-patient values, with patient-bootstrap bounds and standard error."""
    syn, real = np.asarray(syn, float), np.asarray(real, float)
    if len(syn) < 2 or len(real) < 2:
        raise ValueError(f"a patient-level ratio needs at least 2 patients per side, got {len(syn)} and {len(real)}")
    ws, wr = bootstrap_weights(len(syn), replicates, rng), bootstrap_weights(len(real), replicates, rng)
    num, den = ws @ syn / len(syn), wr @ real / len(real)
    reps = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    est = syn.mean() / real.mean() if real.mean() > 0 else float("nan")
    lo, hi = bounds(reps, confidence)
    return {"estimate": float(est), "lower": lo, "upper": hi, "confidence": confidence,
            "se": float(np.nanstd(reps)), "replicates": int(replicates),
            "synthetic_mean": float(syn.mean()), "real_mean": float(real.mean()),
            "patients": {"synthetic": int(len(syn)), "real": int(len(real))}}


def weighted_replicates(statistic: Callable[[np.ndarray, np.ndarray], float], n_syn: int, n_real: int,
                        replicates: int, rng: np.random.Generator) -> np.ndarray:
    """statistic(syn patient weights, real patient weights) over `replicates` independent patient bootstraps."""
    ws, wr = bootstrap_weights(n_syn, replicates, rng), bootstrap_weights(n_real, replicates, rng)
    return np.array([statistic(a, b) for a, b in zip(ws, wr)])


def relative_se(res: dict) -> float:
    """A ratio's standard error scaled to a ratio of 1 (its spread is roughly proportional to its level)."""
    est = res.get("estimate", float("nan"))
    return float(res["se"] / est) if math.isfinite(est) and est > 0 else float("nan")


def planning(se: float, honest: float, threshold: float, op: str, confidence: float = CONFIDENCE) -> dict:
    """Planning figures at this cohort size, from the bootstrap standard error (normal approximation).

    honest_pass_probability: the chance that a generator as good as new real patients (true value
    `honest`) has its safe-side bound inside the threshold; smallest_detectable: the true value that
    the check FAILS (bound on the unsafe side beyond the threshold) with probability DETECT_POWER.
    """
    if not (math.isfinite(se) and se > 0):
        return {}
    z, zp = norm.ppf(confidence), norm.ppf(DETECT_POWER)
    sign = 1.0 if op == "<=" else -1.0
    return {"honest_pass_probability": float(norm.cdf(sign * (threshold - honest) / se - z)),
            "smallest_detectable": float(threshold + sign * (z + zp) * se),
            "detectable_unit": "true value of the statistic", "se": float(se)}


def decide_text(estimate: float, lower: float, upper: float, threshold: float, op: str, patients: int) -> str:
    """What cohort would decide an inconclusive check: interval width shrinks as 1/sqrt(patients)."""
    if not all(math.isfinite(v) for v in (estimate, lower, upper)) or patients < 1:
        return "the statistic could not be measured; check the inputs"
    half = max(estimate - lower, upper - estimate, 1e-12)
    gap = abs(threshold - estimate)
    if gap < 1e-9:
        return f"the estimate sits on the threshold {threshold:g}: no cohort size decides it"
    need = math.ceil(patients * (half / gap) ** 2)
    side = "pass" if (estimate <= threshold if op == "<=" else estimate >= threshold) else "fail"
    return (f"would likely {side} with about {need} synthetic and {need} holdout patients "
            f"(now {patients}; the interval narrows as 1/sqrt(patients))")
