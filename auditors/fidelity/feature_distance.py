"""Frechet distance and KID in learned feature spaces, against the real-vs-real baseline.

FID's ImageNet Inception is neither available offline nor a judge of cardiac MRI, so the
distances are taken in the project's own spaces (the segmenter's encoder; the self-supervised
embedding), standardised with train's features. What is gated is the EXCESS
(FD(synthetic, train) - FD(holdout, train)) / tr(cov(train)) at the same number of slices: about 0
for a generator as close to the patients as new real patients are, above 0 otherwise. Both FDs carry
the same small-sample bias, which cancels in the difference, and the scale (train's total feature
variance, the feature dimension after standardisation) does not depend on the cohort, so an honest
excess and its interval shrink towards 0 as the cohort grows while a fault's excess stays. The ratio
FD(synthetic, train) / FD(holdout, train), gated until 2026-12-04, is still reported: its
denominator shrinks with the cohort together with its noise, so its interval never narrowed
(honest intervals up to [0.36, 3.46] at 100 patients). Intervals come from a bootstrap over
subjects of both the synthetic and the holdout sets.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from auditors.base import AuditContext, AuditResult, Auditor, Option, register_auditor

from .distances import (frechet_from_stats, frechet_to_reference, matched_sample, mean_cov, mmd2_from_kernels,
                        multiplicities, percentile_interval, polynomial_kernel, subject_groups, weighted_kid,
                        weighted_mean_cov)
from .resampling import bias_aware_bounds, decide_text, planned, planning
from .spaces import available_spaces, matched_indices, standardised

DEFAULT_BOOTSTRAP = 200
FD_EXCESS_THRESHOLD = 0.03  # docs/fidelity-utility-checks.md: never looser than the old ratio on a measured fault
KID_REFERENCE_MAX = 2000  # train slices in KID's reference sample (its cost is quadratic)


class _Reference:
    """Train statistics computed once: Gaussian moments for FD, a kernel sample for KID."""

    def __init__(self, train: np.ndarray, rng: np.random.Generator):
        self.mu, self.cov = mean_cov(train)
        keep = rng.choice(len(train), size=min(len(train), KID_REFERENCE_MAX), replace=False)
        self.kid_sample = train[np.sort(keep)]
        self.k_ref = polynomial_kernel(self.kid_sample, self.kid_sample)
        self._fd_to_ref = frechet_to_reference(self.mu, self.cov)

    def fd(self, x: np.ndarray) -> float:
        return frechet_from_stats(*mean_cov(x), self.mu, self.cov)

    def kid(self, x: np.ndarray) -> float:
        return mmd2_from_kernels(polynomial_kernel(x, x), self.k_ref, polynomial_kernel(x, self.kid_sample))

    def replicates(self, x: np.ndarray, weights: np.ndarray, groups: list[np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(FD, KID) to train of every sample given as per-row multiplicities of `x` (R, N), `groups` its rows per
        subject: the same values as `fd(x[idx])` and `kid(x[idx])`, from weighted moments and kernel sums."""
        if not len(weights):
            return np.zeros(0), np.zeros(0)
        means, covs = weighted_mean_cov(x, weights, groups)
        fd = np.array([self._fd_to_ref(mu, cov) for mu, cov in zip(means, covs)])
        return fd, weighted_kid(x, weights, self.kid_sample, self.k_ref)


def _ratio(a, b):
    return float(a / b) if b > 0 else float("nan")


MAX_SYNTHETIC_PARTS = 4  # synthetic slices used by the FD: at most this many holdout-sized parts


def synthetic_parts(groups: list[np.ndarray], n: int, order: np.ndarray, parts: int) -> list[list[int]]:
    """Up to `parts` disjoint sets of subjects (indices into `groups`), taken in `order`, each of at least `n`
    slices."""
    out, picked, total = [], [], 0
    for k in order:
        picked.append(int(k))
        total += len(groups[k])
        if total >= n:
            out.append(picked)
            picked, total = [], 0
            if len(out) == parts:
                break
    return out


def part_count(groups: list[np.ndarray], n: int) -> int:
    """Holdout-sized parts the synthetic set could fill (1 when it is not larger); a draw may fill fewer."""
    return int(max(1, min(MAX_SYNTHETIC_PARTS, sum(len(g) for g in groups) // max(n, 1))))


def compare_in_space(ctx, space: str, bootstrap: int) -> dict:
    """FD and KID of the synthetic and holdout sets to train at the holdout's slice count, with bootstrap bounds.

    FD carries a small-sample bias that depends on the slice count, so the synthetic set is measured at the
    holdout's count. A synthetic set several times larger is split into up to MAX_SYNTHETIC_PARTS disjoint
    holdout-sized parts of whole patients and its figures are their mean: the bias stays matched and the extra
    patients narrow the interval. A bootstrap replicate resamples each part within its own patients, as the
    holdout is resampled; with one part it is the holdout-sized draw of before."""
    feats = standardised(ctx, space)
    rng = np.random.default_rng([ctx.seed, 7])
    ref = _Reference(feats["train"], rng)
    idx = matched_indices(ctx)
    groups = {s: subject_groups(getattr(ctx, s).subject_ids) for s in ("holdout", "synthetic")}
    n = len(idx["holdout"])
    parts = part_count(groups["synthetic"], n)
    subjects = [] if parts == 1 else synthetic_parts(groups["synthetic"], n, np.random.default_rng(
        [ctx.seed, 7, 1]).permutation(len(groups["synthetic"])), parts)
    part_groups = [[groups["synthetic"][k] for k in ks] for ks in subjects]
    point_parts = [idx["synthetic"]] if parts == 1 else [np.concatenate(g)[:n] for g in part_groups]
    draws = {"holdout": [], "synthetic": []}
    for _ in tqdm(range(bootstrap), desc=f"FD/KID bootstrap ({space})", disable=ctx.quiet, leave=False):
        draws["holdout"].append(matched_sample(groups["holdout"], n, rng, replace=True))
        # each part resampled within its own patients, as the holdout is: the parts are independent samples, and
        # a replicate's repeated patients then shrink the synthetic FD as they shrink the holdout's (the bias
        # that the difference cancels)
        draws["synthetic"].append([matched_sample(g, n, rng, replace=True)
                                   for g in (part_groups or [groups["synthetic"]])])
    # Every sample (the matched one of the point estimate first, then the bootstrap replicates) is a multiset of
    # the set's slices: its FD and KID follow exactly from per-slice multiplicities, one pass over the set.
    per_set = {"holdout": ref.replicates(feats["holdout"], multiplicities([idx["holdout"]] + draws["holdout"],
                                                                           len(feats["holdout"])), groups["holdout"])}
    samples = [point_parts] + draws["synthetic"]
    flat = [part for sample in samples for part in sample]
    owner = np.repeat(np.arange(len(samples)), [len(sample) for sample in samples])
    fd_parts, kid_parts = ref.replicates(feats["synthetic"], multiplicities(flat, len(feats["synthetic"])),
                                         groups["synthetic"])
    count = np.bincount(owner)
    per_set["synthetic"] = (np.bincount(owner, fd_parts) / count, np.bincount(owner, kid_parts) / count)
    point = {name: (float(per_set["synthetic"][k][0]), float(per_set["holdout"][k][0]))
             for k, name in enumerate(("fd", "kid"))}
    reps = {name: list(zip(per_set["synthetic"][k][1:], per_set["holdout"][k][1:]))
            for k, name in enumerate(("fd", "kid"))}
    out = {"slices_per_set": n, "synthetic_parts": len(point_parts), "dim": int(feats["train"].shape[1]),
           "bootstrap": bootstrap}
    for name, (s, b) in point.items():
        r = np.asarray(reps[name]) if bootstrap else np.zeros((0, 2))
        out[name] = {"synthetic_vs_train": s, "holdout_vs_train": b,
                     "synthetic_ci95": percentile_interval(r[:, 0]), "holdout_ci95": percentile_interval(r[:, 1])}
    out["fd"]["ratio"] = _ratio(*point["fd"])
    ratio_reps = [_ratio(s, b) for s, b in reps["fd"]]
    out["fd"]["ratio_ci95"] = percentile_interval(ratio_reps)
    # one-sided 95% each, what the check gates on; bias-aware: the bootstrap of an FD ratio runs low
    out["fd"]["ratio_bounds"] = list(bias_aware_bounds(out["fd"]["ratio"], ratio_reps))
    out["fd"]["ratio_se"] = float(np.nanstd(ratio_reps)) if bootstrap else float("nan")
    # What the check gates on: the excess over the real baseline on a fixed scale (train's total feature variance).
    # Unlike the ratio, whose denominator shrinks with the cohort together with its noise, an honest excess and its
    # spread both go to 0 as the cohort grows while a fault's excess stays.
    scale = float(np.trace(ref.cov))
    excess_reps = [(s - b) / scale for s, b in reps["fd"]] if scale > 0 else []
    out["fd"]["train_total_variance"] = scale
    out["fd"]["excess"] = (point["fd"][0] - point["fd"][1]) / scale if scale > 0 else float("nan")
    out["fd"]["excess_bounds"] = (list(bias_aware_bounds(out["fd"]["excess"], excess_reps)) if excess_reps
                                  else [float("nan"), float("nan")])
    out["fd"]["excess_se"] = float(np.nanstd(excess_reps)) if excess_reps else float("nan")
    # KID is unbiased: between two real samples it is about 0 and may be negative, so its ratio
    # is unstable; the excess over the baseline is the readable figure (ratio given when defined).
    kid_s, kid_b = point["kid"]
    out["kid"]["excess"] = kid_s - kid_b
    out["kid"]["excess_ci95"] = percentile_interval([s - b for s, b in reps["kid"]])
    out["kid"]["ratio"] = _ratio(kid_s, kid_b) if out["kid"]["holdout_ci95"][0] > 0 else None
    return out


@register_auditor
class FeatureDistanceAuditor(Auditor):
    name = "feature_distance"
    options = (Option("fidelity_bootstrap", int, DEFAULT_BOOTSTRAP, "patient resamples for the distance intervals",
                      low=10, high=100000),)
    group = "fidelity"
    default_thresholds = {
        "fidelity.fd_excess_segmenter": (FD_EXCESS_THRESHOLD, "<=", "Frechet distance to train in the segmenter's "
                                         "encoder features, synthetic minus real holdout (same slice count), as a "
                                         "share of train's total feature variance"),
        "fidelity.fd_excess_embedding": (FD_EXCESS_THRESHOLD, "<=", "Frechet distance to train in the "
                                         "self-supervised embedding, synthetic minus real holdout (same slice "
                                         "count), as a share of train's total feature variance"),
    }

    def plan(self, sizes, thresholds, seed: int = 0) -> dict:
        """Planning from the law of the bound measured on the phantom (resampling.BOUND_AT_100), scaled to the sizes:
        an honest excess is 0."""
        used = min(sizes.synthetic, MAX_SYNTHETIC_PARTS * sizes.holdout)  # synthetic patients beyond the parts idle
        return {name: planned(name, used, sizes.holdout, 0.0, float(thresholds.get(name, default)), op)
                for name, (default, op, _) in self.default_thresholds.items()}

    def run(self, ctx: AuditContext) -> AuditResult:
        bootstrap = ctx.option("fidelity_bootstrap")
        results, checks = {}, []
        for space in available_spaces():
            res = compare_in_space(ctx, space, bootstrap)
            results[space] = res
            fd = res["fd"]
            lo, hi = fd["excess_bounds"]
            name, est = f"fidelity.fd_excess_{space}", fd["excess"]
            threshold = ctx.threshold(name, self.default_thresholds[name][0])
            n = min(len(ctx.synthetic.subjects), len(ctx.holdout.subjects))
            r_lo, r_hi = fd["ratio_bounds"]
            checks.append(self.check(ctx, name, est, lower=lo, upper=hi, confidence=0.95,
                                     decide=decide_text(est, lo, hi, threshold, "<=", n),
                                     plan=planning(fd["excess_se"], 0.0, threshold, "<="),
                                     details=f"FD {fd['synthetic_vs_train']:.3g} vs baseline {fd['holdout_vs_train']:.3g} "
                                     f"(train's total variance {fd['train_total_variance']:.3g}); excess one-sided 95% "
                                     f"bounds [{lo:.3g}, {hi:.3g}] over {bootstrap} subject bootstraps; "
                                     f"{res['slices_per_set']} slices per set; reported: ratio {fd['ratio']:.3g} "
                                     f"[{r_lo:.2f}, {r_hi:.2f}], KID excess over the real baseline "
                                     f"{res['kid']['excess']:.3g} (95% CI {res['kid']['excess_ci95'][0]:.3g} to "
                                     f"{res['kid']['excess_ci95'][1]:.3g})"))
        return AuditResult(self.name, self.group, metrics={"spaces": results}, checks=checks)
