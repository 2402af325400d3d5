"""Frechet distance and KID in learned feature spaces, as ratios to the real-vs-real baseline.

FID's ImageNet Inception is neither available offline nor a judge of cardiac MRI, so the
distances are taken in the project's own spaces (the segmenter's encoder; the self-supervised
embedding). Their absolute values mean nothing across spaces and sample sizes; what is read is
FD(synthetic, train) / FD(holdout, train) at the same number of slices: about 1 for a generator
as close to the patients as new real patients are, far above 1 otherwise. Intervals come from a
bootstrap over subjects of both the synthetic and the holdout sets.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from auditors.base import AuditContext, AuditResult, Auditor, Option, register_auditor

from .distances import (frechet_from_stats, mean_cov, matched_sample, mmd2_from_kernels, percentile_interval,
                        polynomial_kernel, subject_groups)
from .resampling import bounds, decide_text, planning, relative_se
from .spaces import available_spaces, matched_indices, standardised

DEFAULT_BOOTSTRAP = 200
KID_REFERENCE_MAX = 2000  # train slices in KID's reference sample (its cost is quadratic)


class _Reference:
    """Train statistics computed once: Gaussian moments for FD, a kernel sample for KID."""

    def __init__(self, train: np.ndarray, rng: np.random.Generator):
        self.mu, self.cov = mean_cov(train)
        keep = rng.choice(len(train), size=min(len(train), KID_REFERENCE_MAX), replace=False)
        self.kid_sample = train[np.sort(keep)]
        self.k_ref = polynomial_kernel(self.kid_sample, self.kid_sample)

    def fd(self, x: np.ndarray) -> float:
        return frechet_from_stats(*mean_cov(x), self.mu, self.cov)

    def kid(self, x: np.ndarray) -> float:
        return mmd2_from_kernels(polynomial_kernel(x, x), self.k_ref, polynomial_kernel(x, self.kid_sample))


def _ratio(a, b):
    return float(a / b) if b > 0 else float("nan")


def compare_in_space(ctx, space: str, bootstrap: int) -> dict:
    feats = standardised(ctx, space)
    rng = np.random.default_rng([ctx.seed, 7])
    ref = _Reference(feats["train"], rng)
    idx = matched_indices(ctx)
    hold, syn = feats["holdout"][idx["holdout"]], feats["synthetic"][idx["synthetic"]]
    point = {"fd": (ref.fd(syn), ref.fd(hold)), "kid": (ref.kid(syn), ref.kid(hold))}
    groups = {s: subject_groups(getattr(ctx, s).subject_ids) for s in ("holdout", "synthetic")}
    n = len(idx["holdout"])
    reps = {"fd": [], "kid": []}
    for _ in tqdm(range(bootstrap), desc=f"FD/KID bootstrap ({space})", disable=ctx.quiet, leave=False):
        hb = feats["holdout"][matched_sample(groups["holdout"], n, rng, replace=True)]
        sb = feats["synthetic"][matched_sample(groups["synthetic"], n, rng, replace=True)]
        reps["fd"].append((ref.fd(sb), ref.fd(hb)))
        reps["kid"].append((ref.kid(sb), ref.kid(hb)))
    out = {"slices_per_set": n, "dim": int(feats["train"].shape[1]), "bootstrap": bootstrap}
    for name, (s, b) in point.items():
        r = np.asarray(reps[name]) if bootstrap else np.zeros((0, 2))
        out[name] = {"synthetic_vs_train": s, "holdout_vs_train": b,
                     "synthetic_ci95": percentile_interval(r[:, 0]), "holdout_ci95": percentile_interval(r[:, 1])}
    out["fd"]["ratio"] = _ratio(*point["fd"])
    ratio_reps = [_ratio(s, b) for s, b in reps["fd"]]
    out["fd"]["ratio_ci95"] = percentile_interval(ratio_reps)
    out["fd"]["ratio_bounds"] = list(bounds(ratio_reps))  # one-sided 95% each: what the check gates on
    out["fd"]["ratio_se"] = float(np.nanstd(ratio_reps)) if bootstrap else float("nan")
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
        "fidelity.fd_ratio_segmenter": (2.5, "<=", "Frechet distance to train in the segmenter's encoder features, "
                                                   "synthetic over real holdout (same slice count)"),
        "fidelity.fd_ratio_embedding": (2.5, "<=", "Frechet distance to train in the self-supervised embedding, "
                                                   "synthetic over real holdout (same slice count)"),
    }

    def run(self, ctx: AuditContext) -> AuditResult:
        bootstrap = ctx.option("fidelity_bootstrap")
        results, checks = {}, []
        for space in available_spaces():
            res = compare_in_space(ctx, space, bootstrap)
            results[space] = res
            lo, hi = res["fd"]["ratio_bounds"]
            name, est = f"fidelity.fd_ratio_{space}", res["fd"]["ratio"]
            threshold = ctx.threshold(name, self.default_thresholds[name][0])
            n = min(len(ctx.synthetic.subjects), len(ctx.holdout.subjects))
            checks.append(self.check(ctx, name, est, lower=lo, upper=hi, confidence=0.95,
                                     decide=decide_text(est, lo, hi, threshold, "<=", n),
                                     plan=planning(relative_se({"estimate": est, "se": res["fd"]["ratio_se"]}), 1.0,
                                                   threshold, "<="),
                                     details=f"FD {res['fd']['synthetic_vs_train']:.3g} vs baseline "
                                     f"{res['fd']['holdout_vs_train']:.3g}; ratio one-sided 95% bounds [{lo:.2f}, {hi:.2f}] over "
                                     f"{bootstrap} subject bootstraps; {res['slices_per_set']} slices per set; KID excess over "
                                     f"the real baseline {res['kid']['excess']:.3g} (95% CI "
                                     f"{res['kid']['excess_ci95'][0]:.3g} to {res['kid']['excess_ci95'][1]:.3g})"))
        return AuditResult(self.name, self.group, metrics={"spaces": results}, checks=checks)
