"""Mask consistency: does each synthetic image show the anatomy it was conditioned on?

The segmenter trained on real train segments every synthetic slice; its Dice against the label
map the slice was generated from is set beside the same Dice on real holdout slices (where the
label is the expert's). Their ratio is the check: a generator that draws the asked-for heart
scores like real data (ratio near 1); one that ignores or scrambles the mask scores far below.
The absolute Dice on real holdout is checked too: if the segmenter itself is poor, the ratio
means nothing and the audit must not pass on it.
"""
from __future__ import annotations

import numpy as np

from auditors.base import AuditContext, AuditResult, Auditor, Figure, register_auditor
from auditors.segmentation import metrics
from auditors.segmentation.train import real_train_segmenter
from cmri_release.core.sliceset import SliceSet

from . import plots
from .resampling import decide_text, matched_plan, planning, slice_mean, slice_mean_ratio


def _volume_ids(slices: SliceSet) -> np.ndarray:
    return np.char.add(np.char.add(slices.subject_ids.astype(str), "|"), slices.phases.astype(str))


def score_slices(segmenter, slices: SliceSet) -> tuple[dict, np.ndarray]:
    """(summary, (N, structures) per-slice Dice) of the segmenter against the slices' labels."""
    pred = segmenter.predict(slices.images)
    per_slice = metrics.slice_scores(pred, slices.labels, slices.spacing_mm)
    thickness = {sid: m.get("thickness_mm") for sid, m in slices.subject_meta.items()}
    vids = _volume_ids(slices)
    with_hd = all(thickness.get(s) for s in slices.subjects)  # through-plane spacing known for every subject
    thick_by_volume = {v: thickness[v.split("|")[0]] for v in set(vids.tolist())} if with_hd else 0.0
    per_volume = metrics.volume_scores(pred, slices.labels, vids, slices.slice_index, slices.spacing_mm,
                                       thick_by_volume, with_hd95=with_hd)
    slice_dice = np.stack(list(per_slice["dice"].values()), axis=1)  # (N, structures), NaN where undefined
    by_vendor = {}
    for vendor in slices.vendor_names:
        sel = slices.vendors == vendor
        by_vendor[vendor] = {"slices": int(sel.sum()),
                             "dice": metrics.summarise({k: v[sel] for k, v in per_slice["dice"].items()}),
                             "hd95_mm": metrics.summarise({k: v[sel] for k, v in per_slice["hd95"].items()})}
    return {
        "slices": len(slices), "subjects": len(slices.subjects),
        "dice": metrics.summarise(per_slice["dice"]),
        "hd95_mm": metrics.summarise(per_slice["hd95"]),
        "volume_dice": metrics.summarise(per_volume["dice"]),
        "volume_hd95_mm": metrics.summarise(per_volume["hd95"]) if with_hd else "not computed: slice thickness "
                                                                                "unknown for some subject",
        "by_vendor": by_vendor,
    }, slice_dice


def _ratio(a: float, b: float) -> float:
    return float(a / b) if np.isfinite(a) and np.isfinite(b) and b > 0 else float("nan")


def sample_grid_figure(slices: SliceSet, seed: int, per_row: int = 8) -> Figure:
    rng = np.random.default_rng(seed)
    images, labels = {}, {}
    for vendor in slices.vendor_names:
        idx = np.flatnonzero(slices.vendors == vendor)
        idx = np.sort(rng.choice(idx, size=min(per_row, len(idx)), replace=False))
        images[vendor], labels[vendor] = slices.images[idx], slices.labels[idx]
    png = plots.sample_grid(images, labels, "Synthetic slices per vendor, outlined with their conditioning masks")
    return Figure(name="fidelity_sample_grid", title="Synthetic samples per vendor", png=png, public=True,
                  caption="Random synthetic slices (rows: vendors). Outlines: RV blue, MYO green, LV red.")


@register_auditor
class MaskConsistencyAuditor(Auditor):
    def _bounded(self, ctx, name, res, patients, honest, details):
        threshold = ctx.threshold(name, self.default_thresholds[name][0])
        op = self.default_thresholds[name][1]
        return self.check(ctx, name, res["estimate"], lower=res["lower"], upper=res["upper"], confidence=0.95,
                          details=details, decide=decide_text(res["estimate"], res["lower"], res["upper"], threshold,
                                                              op, patients),
                          plan=planning(res["se"], honest, threshold, op) if honest is not None else {})

    name = "mask_consistency"
    group = "fidelity"
    default_thresholds = {
        "fidelity.mask_dice_ratio": (0.8, ">=", "mean Dice of the real-trained segmenter on synthetic slices vs "
                                                "their conditioning masks, over the same on real holdout"),
        "fidelity.segmenter_real_dice": (0.5, ">=", "the audit's segmenter reaches this Dice on real holdout "
                                                    "slices (else mask consistency cannot be judged)"),
    }

    def plan(self, sizes, thresholds, seed: int = 0) -> dict:
        """From the law of the bound measured on the phantom (resampling.BOUND_AT_100), at the matched size."""
        return matched_plan(self.default_thresholds, sizes, thresholds)

    def run(self, ctx: AuditContext) -> AuditResult:
        synthetic, real = ctx.synthetic.labelled(), ctx.holdout.labelled()
        if len(synthetic) == 0:
            raise ValueError("the synthetic slices carry no label maps: mask consistency needs the masks the "
                             "images were conditioned on")
        if len(real) == 0:
            raise ValueError("the holdout slices carry no label maps: no real baseline for mask consistency")
        segmenter = real_train_segmenter(ctx)
        (syn, syn_slices), (ref, ref_slices) = score_slices(segmenter, synthetic), score_slices(segmenter, real)
        replicates = ctx.option("fidelity_bootstrap")
        rng = np.random.default_rng([ctx.seed, 17])
        # Gated: the mean over structures of each structure's mean Dice (as reported), patients resampled.
        ratio_ci = slice_mean_ratio(syn_slices, synthetic.subject_ids, ref_slices, real.subject_ids, replicates, rng)
        real_ci = slice_mean(ref_slices, real.subject_ids, replicates, rng)
        ratio = _ratio(syn["dice"]["mean"], ref["dice"]["mean"])
        per_structure = {s: _ratio(syn["dice"][s], ref["dice"][s]) for s in metrics.STRUCTURE_LABELS}
        per_vendor = {v: _ratio(d["dice"]["mean"], ref["by_vendor"].get(v, ref)["dice"]["mean"])
                      for v, d in syn["by_vendor"].items()}
        metrics_out = {"synthetic": syn, "real_holdout": ref, "dice_ratio": ratio, "gated_ratio": ratio_ci,
                       "gated_real_dice": real_ci,
                       "dice_ratio_by_structure": per_structure, "dice_ratio_by_vendor": per_vendor,
                       "segmenter": segmenter.log}
        structures = list(metrics.STRUCTURE_LABELS)
        vendors = sorted(set(syn["by_vendor"]) | set(ref["by_vendor"]))

        def vendor_means(block):
            return [block["by_vendor"].get(v, {"dice": {"mean": np.nan}})["dice"]["mean"] for v in vendors]

        bars = plots.grouped_bars(
            structures + [f"all {v}" for v in vendors],
            {"synthetic vs its mask": [syn["dice"][s] for s in structures] + vendor_means(syn),
             "real holdout vs expert": [ref["dice"][s] for s in structures] + vendor_means(ref)},
            "Mask consistency: Dice of the real-trained segmenter", "Dice", ylim=(0, 1))
        figures = [sample_grid_figure(ctx.synthetic, ctx.seed),
                   Figure(name="fidelity_mask_dice", title="Mask consistency (Dice)", png=bars, public=True,
                          caption="Per structure and per vendor; real holdout is the baseline.")]
        details = (f"synthetic {syn['dice']['mean']:.3f} over {syn['slices']} slices / real holdout "
                   f"{ref['dice']['mean']:.3f} over {ref['slices']} slices")
        n = min(ratio_ci["patients"].values())
        checks = [self._bounded(ctx, "fidelity.mask_dice_ratio", ratio_ci, n, 1.0, details + f"; {replicates} patient "
                                "bootstraps"),
                  self._bounded(ctx, "fidelity.segmenter_real_dice", real_ci, real_ci["patients"], None,
                                f"{ref['subjects']} holdout subjects; segmenter {segmenter.log.get('steps')} steps")]
        return AuditResult(self.name, self.group, metrics=metrics_out, checks=checks, figures=figures)
