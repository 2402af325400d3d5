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


def bias_aware_bounds(estimate: float, replicates, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The hull of the percentile and the basic (reverse-percentile) bootstrap bounds.

    A statistic whose bootstrap is biased (a Frechet distance of resampled patients: repeated slices shrink the
    holdout's sampling noise more than the synthetic's distance) has percentile bounds that can exclude its own
    estimate, on the side that decides a pass. The basic bounds (2 x estimate - percentile) correct a constant
    bias; taking the wider of the two on each side never narrows the interval, so the gate is never loosened."""
    lo, hi = bounds(replicates, confidence)
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(estimate)):
        return lo, hi
    return float(min(lo, 2 * estimate - hi, estimate)), float(max(hi, 2 * estimate - lo, estimate))


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


def _patient_sums(values, subject_ids) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient sums and counts of the finite per-slice values: (P, K) each for (N, K) values (K columns)."""
    values = np.asarray(values, float)
    values = values[:, None] if values.ndim == 1 else values
    _, rank = patient_index(subject_ids)
    n = rank.max() + 1 if len(rank) else 0
    ok = np.isfinite(values)
    sums = np.stack([np.bincount(rank[ok[:, k]], weights=values[ok[:, k], k], minlength=n)
                     for k in range(values.shape[1])], axis=1)
    counts = np.stack([np.bincount(rank[ok[:, k]], minlength=n) for k in range(values.shape[1])], axis=1)
    return sums, counts.astype(float)


def _column_means(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R,) mean over columns of each column's weighted mean, for (R, P) patient weights; NaN columns skipped."""
    num, den = weights @ sums, weights @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan), axis=1)


def slice_mean(values, subject_ids, replicates: int, rng: np.random.Generator, confidence: float = CONFIDENCE) -> dict:
    """Mean of per-slice values (for (N, K) values: the mean over the K columns of each column's mean), with
    patient-bootstrap bounds: a patient's slices move together."""
    sums, counts = _patient_sums(values, subject_ids)
    est = float(_column_means(sums, counts, np.ones((1, len(sums))))[0])
    reps = _column_means(sums, counts, bootstrap_weights(len(sums), replicates, rng))
    lo, hi = bounds(reps, confidence)
    return {"estimate": est, "lower": lo, "upper": hi, "confidence": confidence,
            "se": float(np.nanstd(reps)), "replicates": int(replicates), "patients": int(len(sums))}


def slice_mean_ratio(syn, syn_ids, real, real_ids, replicates: int, rng: np.random.Generator,
                     confidence: float = CONFIDENCE) -> dict:
    """slice_mean(synthetic) / slice_mean(real), both sides' patients resampled independently."""
    parts = []
    for values, ids in ((syn, syn_ids), (real, real_ids)):
        sums, counts = _patient_sums(values, ids)
        parts.append((float(_column_means(sums, counts, np.ones((1, len(sums))))[0]),
                      _column_means(sums, counts, bootstrap_weights(len(sums), replicates, rng)), len(sums)))
    (s, s_reps, ns), (r, r_reps, nr) = parts
    reps = np.where(r_reps > 0, s_reps / np.where(r_reps > 0, r_reps, 1.0), np.nan)
    lo, hi = bounds(reps, confidence)
    return {"estimate": s / r if r > 0 else float("nan"), "lower": lo, "upper": hi, "confidence": confidence,
            "se": float(np.nanstd(reps)), "replicates": int(replicates), "synthetic_mean": s,
            "real_mean": r, "patients": {"synthetic": int(ns), "real": int(nr)}}


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
    if need > 100 * patients:  # the estimate sits on the threshold for any cohort one could gather
        return (f"the estimate is {gap:.3g} from the threshold {threshold:g}: it would take over {100 * patients} "
                f"synthetic and holdout patients to decide (now {patients})")
    return (f"would likely {side} with about {need} synthetic and {need} holdout patients "
            f"(now {patients}; the interval narrows as 1/sqrt(patients))")


# The law of each check's bound on the safe side over honest draws at 100 synthetic / 100 holdout phantom patients
# (32 px): per check, (how far the bound sits from the mean estimate, towards the threshold's far side, and the
# standard deviation of the bound across draws). Planning on the gated bound itself, not on a bootstrap standard
# error: the bootstrap intervals are wider than the estimates' spread across draws (FD excess in the segmenter
# space: estimates spread 0.0059, half-widths 0.0135 / 1.645 = 0.0082), and one draw's interval can be 3x wider
# than the median, which the spread of the bound carries and a single standard error does not. Measured: FD excess
# on the 20 honest draws of benchmarks/fd_excess_seeds_0_20_networks3.jsonl (3 networks per space, the
# default), the others on those of
# benchmarks/fidelity_group_seeds_0_20.jsonl (the ">=" checks' lower bounds from before their bounds became
# bias-aware, so their offsets run a little small; their thresholds are far from honest values). Both figures
# scale as sqrt(1/n_syn + 1/n_hold). HONEST_AT_100: the honest value where it is not the statistic's null.
BOUND_AT_100 = {"fidelity.texture_ratio": (0.211, 0.105), "fidelity.spectrum_ratio": (0.237, 0.148),
                "fidelity.structure_texture_ratio": (0.168, 0.098), "fidelity.discriminator_auc": (0.038, 0.035),
                "fidelity.intensity_w1_ratio": (0.108, 0.050),
                "fidelity.fd_excess_segmenter": (0.0143, 0.0077), "fidelity.fd_excess_embedding": (0.0132, 0.0035),
                "fidelity.diversity_ratio": (0.033, 0.016), "fidelity.mask_dice_ratio": (0.018, 0.012),
                "fidelity.segmenter_real_dice": (0.010, 0.030), "fidelity.precision_ratio": (0.057, 0.034),
                "fidelity.coverage_ratio": (0.089, 0.037)}
HONEST_AT_100 = {"fidelity.segmenter_real_dice": 0.80}  # the audit's segmenter trained on fresh real patients


def planned(name: str, synthetic: int, holdout: int, honest: float, threshold: float, op: str) -> dict:
    """Planning figures for a cohort of these sizes, before any data: the measured law of the bound, scaled.

    honest_pass_probability: P(bound on the safe side inside the threshold) for a generator whose true value is
    `honest`; smallest_detectable: the true value whose bound on the other side (taken as symmetric) lies beyond
    the threshold with probability DETECT_POWER, i.e. the check FAILS it.
    """
    if name not in BOUND_AT_100 or synthetic < 2 or holdout < 2:
        return {}
    scale = math.sqrt((1 / synthetic + 1 / holdout) / (2 / 100))
    offset, spread = (v * scale for v in BOUND_AT_100[name])
    sign = 1.0 if op == "<=" else -1.0
    return {"honest_pass_probability": float(norm.cdf(sign * (threshold - honest) / spread - offset / spread)),
            "smallest_detectable": float(threshold + sign * (offset + norm.ppf(DETECT_POWER) * spread)),
            "detectable_unit": "true value of the statistic", "bound_offset": float(offset),
            "bound_spread": float(spread)}


def matched_plan(default_thresholds: dict, sizes, thresholds: dict) -> dict:
    """Plans of checks computed on the matched samples (synthetic capped at the holdout's size): BOUND_AT_100."""
    used = min(sizes.synthetic, sizes.holdout)
    return {name: planned(name, used, sizes.holdout, HONEST_AT_100.get(name, 1.0),
                          float(thresholds.get(name, default)), op)
            for name, (default, op, _) in default_thresholds.items()}
