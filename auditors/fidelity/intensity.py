"""Intensity statistics per structure (blood pool, myocardium, background) and per vendor.

Read through the label maps: the blood pool (RV + LV cavities) must be bright, the myocardium
dark grey, and each vendor's contrast its own. Each (vendor, structure) distribution of the
synthetic slices is compared with train's by the 1-Wasserstein distance (scipy), beside the same
distance for real holdout slices, and each synthetic subject's distributions with train's beside
each real holdout subject's (the check: the ratio of their means). Shuffled masks or noise images
put the wrong pixels under each label and fail it.
"""
from __future__ import annotations

import numpy as np

from auditors.base import AuditContext, AuditResult, Auditor, Figure, register_auditor
from cmri_release.core.sliceset import SliceSet

from . import plots
from .resampling import planned, decide_text, planning, ratio_of_means, relative_se

REGIONS = {"blood pool": (1, 3), "myocardium": (2,), "background": (0,)}
MAX_PIXELS = 100_000  # per (set, vendor, region): W1 sorts its samples


def region_pixels(slices: SliceSet, vendor: str, labels: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    sel = slices.has_label & (slices.vendors == vendor)
    values = slices.images[sel][np.isin(slices.labels[sel], labels)]
    if len(values) > MAX_PIXELS:
        values = values[rng.choice(len(values), MAX_PIXELS, replace=False)]
    return values.astype(np.float64)


def wasserstein_to_sorted(values: np.ndarray, reference_sorted: np.ndarray) -> float:
    """1-Wasserstein distance between `values` and an already sorted reference sample: scipy's
    `wasserstein_distance` (the integral of |F_u - F_v| between consecutive pooled values), without sorting the
    reference again. The pooled order comes from inserting the sorted values into the reference (a linear merge);
    each CDF at a pooled value is the running count of its own sample's members up to there, which is exact at
    every value followed by a larger one (tied values bound a gap of width 0, which adds nothing)."""
    u = np.sort(np.asarray(values, dtype=np.float64))
    v = np.asarray(reference_sorted, dtype=np.float64)
    n, m = len(u), len(v)
    if n == 0 or m == 0:
        raise ValueError("the Wasserstein distance needs two non-empty samples")
    where = np.searchsorted(v, u) + np.arange(n)  # positions of the values in the merged order
    pooled = np.insert(v, where - np.arange(n), u)
    from_u = np.zeros(n + m, dtype=bool)
    from_u[where] = True
    cdf_u = np.cumsum(from_u)[:-1] / n
    cdf_v = np.cumsum(~from_u)[:-1] / m
    return float(np.sum(np.abs(cdf_u - cdf_v) * np.diff(pooled)))


def describe(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"pixels": 0}
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"pixels": int(len(values)), "mean": float(values.mean()), "std": float(values.std()),
            "p5": float(p5), "median": float(p50), "p95": float(p95)}


def subject_distances(slices: SliceSet, reference: dict, rng: np.random.Generator) -> list[float]:
    """Per subject: the mean over regions of the W1 between its pixels and the reference (train) pixels of its
    vendor, given sorted (the patient is the unit the interval resamples)."""
    out = []
    for sid in slices.subjects:
        one = slices.for_subjects([sid])
        vendor = one.vendors[0]
        dists = []
        for region, labels in REGIONS.items():
            px = region_pixels(one, vendor, labels, rng)
            ref = reference.get((vendor, region))
            if len(px) and ref is not None and len(ref):
                dists.append(wasserstein_to_sorted(px, ref))
        if dists:
            out.append(float(np.mean(dists)))
    return out


def intensity_report(ctx: AuditContext) -> tuple[dict, dict]:
    """(metrics, histogram panels) for every vendor the synthetic set and train share.

    The check compares patients, not pooled sets: the mean over synthetic subjects (and regions)
    of each subject's W1 to train, over the same mean for real holdout subjects. Pooled-set W1
    between two small real samples is close to 0 and noisy, which makes a ratio to it unstable;
    a patient's distance to the population is large enough to be a steady yardstick.
    """
    rng = np.random.default_rng([ctx.seed, 9])
    sets = {"train": ctx.train, "holdout": ctx.holdout, "synthetic": ctx.synthetic}
    vendors = [v for v in ctx.synthetic.vendor_names if v in set(ctx.train.vendor_names)]
    if not vendors:
        raise ValueError(f"no vendor shared by synthetic ({ctx.synthetic.vendor_names}) and train "
                         f"({ctx.train.vendor_names}) slices: intensities cannot be compared")
    out, panels, reference = {}, {}, {}
    for vendor in vendors:
        out[vendor] = {}
        for region, labels in REGIONS.items():
            px = {name: region_pixels(s, vendor, labels, rng) for name, s in sets.items()}
            reference[(vendor, region)] = np.sort(px["train"])  # sorted once for every W1 against it
            entry = {name: describe(v) for name, v in px.items()}
            for name in ("synthetic", "holdout"):
                if len(px["train"]) and len(px[name]):
                    entry[f"w1_{name}_vs_train"] = wasserstein_to_sorted(px[name], reference[(vendor, region)])
            out[vendor][region] = entry
            panels[f"{vendor}: {region}"] = {"real train": px["train"], "synthetic": px["synthetic"]}
        blood, myo = out[vendor]["blood pool"], out[vendor]["myocardium"]
        out[vendor]["blood_myocardium_contrast"] = {
            name: blood[name]["mean"] - myo[name]["mean"] for name in sets
            if blood[name].get("pixels") and myo[name].get("pixels")}
    shared = ctx.holdout.for_subjects([s for s, v in ctx.holdout.subject_vendor().items() if v in vendors]) \
        if any(v in vendors for v in ctx.holdout.vendor_names) else None
    syn_w1 = subject_distances(ctx.synthetic, reference, rng)
    real_w1 = subject_distances(shared, reference, rng) if shared is not None else []
    if len(syn_w1) < 2 or len(real_w1) < 2:
        raise ValueError(f"intensity needs at least 2 synthetic and 2 holdout patients of a training vendor, got "
                         f"{len(syn_w1)} and {len(real_w1)}")
    ratio = ratio_of_means(syn_w1, real_w1, ctx.option("fidelity_bootstrap"), rng)
    summary = {"by_vendor": out, "mean_subject_w1_synthetic": ratio["synthetic_mean"],
               "mean_subject_w1_holdout": ratio["real_mean"], "w1_ratio": ratio["estimate"], "w1_ratio_bounds": ratio,
               "synthetic_vendors_not_in_train": sorted(set(ctx.synthetic.vendor_names) - set(vendors)),
               "subjects": {"synthetic": len(ctx.synthetic.subjects),
                            "holdout": len(shared.subjects) if shared is not None else 0}}
    return summary, panels


@register_auditor
class IntensityAuditor(Auditor):
    name = "intensity"
    group = "fidelity"
    default_thresholds = {
        "fidelity.intensity_w1_ratio": (2.0, "<=", "mean 1-Wasserstein distance of a synthetic subject's "
                                                   "intensities per structure to train's (same vendor), over the "
                                                   "same for real holdout subjects"),
    }

    def plan(self, sizes, thresholds, seed: int = 0) -> dict:
        """Planning from the law of the bound measured on the phantom (resampling.BOUND_AT_100), scaled to the sizes."""
        return {name: planned(name, sizes.synthetic, sizes.holdout, 1.0, float(thresholds.get(name, default)), op)
                for name, (default, op, _) in self.default_thresholds.items()}

    def run(self, ctx: AuditContext) -> AuditResult:
        summary, panels = intensity_report(ctx)
        everything = np.concatenate([v for p in panels.values() for v in p.values() if len(v)])
        lo, hi = np.percentile(everything, [0.1, 99.9])
        png = plots.histograms(panels, "Intensities per vendor and structure: real train vs synthetic",
                               np.linspace(lo, hi if hi > lo else lo + 1, 50))
        fig = Figure(name="fidelity_intensity_histograms", title="Intensity histograms", png=png, public=True,
                     caption="Normalised intensities under each label; aggregate distributions, no image.")
        res, name = summary["w1_ratio_bounds"], "fidelity.intensity_w1_ratio"
        threshold = ctx.threshold(name, self.default_thresholds[name][0])
        check = self.check(ctx, name, res["estimate"], lower=res["lower"], upper=res["upper"],
                           confidence=res["confidence"],
                           decide=decide_text(res["estimate"], res["lower"], res["upper"], threshold, "<=",
                                              min(res["patients"].values())),
                           plan=planning(relative_se(res), 1.0, threshold, "<="),
                           details=f"mean W1 per subject and structure {summary['mean_subject_w1_synthetic']:.4f} "
                           f"({summary['subjects']['synthetic']} synthetic subjects) vs "
                           f"{summary['mean_subject_w1_holdout']:.4f} ({summary['subjects']['holdout']} real holdout)")
        return AuditResult(self.name, self.group, metrics=summary, checks=[check], figures=[fig])
