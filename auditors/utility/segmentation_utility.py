"""Utility: does a segmenter trained on the synthetic cohort work on real patients?

Segmenters with one architecture, seed and step budget are trained on different data and all
tested on real patients that neither the generator nor any segmenter saw (the test split; the
holdout when no test split is given, which the metrics then say):

- TRTR: real train (the fidelity auditors' segmenter, shared);
- TSTR: synthetic only; the check is TSTR / TRTR mean Dice;
- real + synthetic;
- leave one vendor out: real train without vendor V, tested on V, with and without the synthetic
  slices of V (can the generator fill a missing scanner?);
- low data: a fifth of the real train patients, with and without the synthetic slices.
"""
from __future__ import annotations

import functools
import time

import numpy as np

from auditors.base import AuditContext, AuditResult, Auditor, Figure, Option, register_auditor
from auditors.fidelity import plots
from auditors.segmentation import metrics
from auditors.segmentation.parallel import effective_workers
from auditors.segmentation.train import (DEFAULT_UTILITY_EPOCHS, audit_train_config, real_train_segmenter,
                                         train_segmenter)
from cmri_release.core.errors import CmriError
from cmri_release.core.sliceset import SliceSet
from cmri_release.core.splits import split_subjects

DEFAULT_LOW_DATA_FRACTION = 0.2
EXPERIMENTS = ("mixed", "lovo", "low_data")  # beside TRTR and TSTR, which the check needs and always run
STRUCTURES = list(metrics.STRUCTURE_LABELS)


def evaluate(segmenter, test: SliceSet) -> dict:
    """Mean Dice per structure over the test slices, overall and per vendor."""
    scores = metrics.slice_scores(segmenter.predict(test.images), test.labels, test.spacing_mm,
                                  with_hd95=False)["dice"]
    out = {"dice": metrics.summarise(scores), "by_vendor": {}}
    for vendor in test.vendor_names:
        sel = test.vendors == vendor
        out["by_vendor"][vendor] = metrics.summarise({k: v[sel] for k, v in scores.items()})
    return out


def low_data_subjects(train: SliceSet, fraction: float, seed: int) -> list[str]:
    """A vendor-stratified `fraction` of the train patients (at least one)."""
    try:
        return split_subjects(train.subject_vendor(), {"low": fraction, "rest": 1 - fraction}, seed)["low"]
    except CmriError:  # too few patients per vendor for a stratified cut: draw across vendors
        subjects = train.subjects
        rng = np.random.default_rng(seed)
        n = max(1, int(round(fraction * len(subjects))))
        return sorted(rng.choice(subjects, size=n, replace=False).tolist())


def _composition(real: SliceSet | None, synthetic: SliceSet | None) -> dict:
    out = {}
    for name, s in (("real", real), ("synthetic", synthetic)):
        if s is not None and len(s):
            out[f"{name}_slices"] = len(s)
            out[f"{name}_subjects"] = len(s.subjects)
    return out


def _segmenter_job(job, *, config, seed: int, device: str) -> dict:
    """Train one segmenter on a job's real and/or synthetic slices and evaluate it on its test slices: a plain
    function of picklable data, so that any executor (a thread here, a Ray task elsewhere) can run it."""
    name, real, syn, on = job
    start = time.perf_counter()
    data = SliceSet.concat([p for p in (real, syn) if p is not None and len(p)])
    segmenter = train_segmenter(data, config, seed=seed, device=device, quiet=True, desc=f"segmenter: {name}")
    return {**_composition(real, syn), **evaluate(segmenter, on), "seconds": round(time.perf_counter() - start, 2)}


@register_auditor
class SegmentationUtilityAuditor(Auditor):
    name = "segmentation_utility"
    options = (
        Option("utility_experiments", "str-list", EXPERIMENTS, "utility experiments run beside TRTR and TSTR",
               choices=EXPERIMENTS),
        Option("utility_low_data_fraction", float, DEFAULT_LOW_DATA_FRACTION,
               "share of real training patients in the low-data experiment", low=0.01, high=1.0),
    )
    group = "utility"
    default_thresholds = {
        "utility.tstr_dice_ratio": (0.7, ">=", "mean Dice on real test patients of a segmenter trained on synthetic "
                                               "slices only, over the same for one trained on real train"),
    }

    def run(self, ctx: AuditContext) -> AuditResult:
        if ctx.test is not None:
            test, test_split = ctx.test.labelled(), "test"
        else:
            test, test_split = ctx.holdout.labelled(), "holdout (no separate test split was given)"
        train, synthetic = ctx.train.labelled(), ctx.synthetic.labelled()
        for name, s in (("real test", test), ("real train", train), ("synthetic", synthetic)):
            if len(s) == 0:
                raise ValueError(f"the {name} slices carry no label maps: segmentation utility cannot be measured")
        config = audit_train_config(ctx)
        wanted = ctx.option("utility_experiments")
        # Plan every segmenter first, then train them side by side (parallel.py): they are independent.
        jobs: list[tuple[str, SliceSet | None, SliceSet | None, SliceSet]] = [("TSTR (synthetic only)", None,
                                                                                 synthetic, test)]
        if "mixed" in wanted:
            jobs.append(("real + synthetic", train, synthetic, test))
        lovo_plan = []
        train_vendors = set(train.vendor_names)
        if "lovo" in wanted and len(train_vendors) >= 2:
            for vendor in test.vendor_names:
                if vendor not in train_vendors:
                    continue
                rest, on = train.select(train.vendors != vendor), test.select(test.vendors == vendor)
                syn_v = synthetic.select(synthetic.vendors == vendor)
                without, with_syn = f"LOVO {vendor}: real without {vendor}", f"LOVO {vendor}: + synthetic {vendor}"
                jobs.append((without, rest, None, on))
                if len(syn_v):
                    jobs.append((with_syn, rest, syn_v, on))
                lovo_plan.append((vendor, without, with_syn if len(syn_v) else None, len(syn_v)))
        lovo_note = ("not run: the real train split holds fewer than two vendors" if "lovo" in wanted
                     else "not run: not among the requested utility experiments")
        low_plan = None
        if "low_data" in wanted:
            fraction = ctx.option("utility_low_data_fraction")
            few = train.for_subjects(low_data_subjects(train, fraction, ctx.seed))
            low_plan = (fraction, few, f"low data ({fraction:.0%} real)",
                        f"low data ({fraction:.0%} real) + synthetic")
            jobs += [(low_plan[2], few, None, test), (low_plan[3], few, synthetic, test)]

        run = functools.partial(_segmenter_job, config=config, seed=ctx.seed, device=ctx.device)

        start = time.perf_counter()
        runs: dict[str, dict] = {"TRTR (real train)": {**_composition(train, None),
                                                       **evaluate(real_train_segmenter(ctx), test),
                                                       "seconds": round(time.perf_counter() - start, 2)}}
        workers = ctx.option("segmenter_workers")
        runs.update(zip([j[0] for j in jobs], ctx.map_jobs(run, jobs, workers=workers, desc="utility segmenters")))
        trtr, tstr = runs["TRTR (real train)"], runs["TSTR (synthetic only)"]

        lovo = {}
        for vendor, without, with_syn, n_syn in lovo_plan:
            entry = {"without_synthetic": runs[without]["dice"]["mean"], "synthetic_slices": n_syn}
            if with_syn is not None:
                entry["with_synthetic"] = runs[with_syn]["dice"]["mean"]
                entry["gain"] = entry["with_synthetic"] - entry["without_synthetic"]
            lovo[vendor] = entry

        low_data = "not run: not among the requested utility experiments"
        if low_plan is not None:
            fraction, few, low_name, low_syn_name = low_plan
            low, low_syn = runs[low_name], runs[low_syn_name]
            low_data = {"fraction": fraction, "real_subjects": len(few.subjects), "without_synthetic":
                        low["dice"]["mean"], "with_synthetic": low_syn["dice"]["mean"],
                        "gain": low_syn["dice"]["mean"] - low["dice"]["mean"]}

        ratio = (tstr["dice"]["mean"] / trtr["dice"]["mean"]) if trtr["dice"]["mean"] > 0 else float("nan")
        summary = {
            "test_split": test_split, "test_slices": len(test), "test_subjects": len(test.subjects),
            "budget": {"utility_epochs": ctx.option("utility_epochs"),
                       "steps_per_segmenter": config.steps, "batch_size": config.batch_size,
                       "segmenters": len(runs),
                       "trained_at_once": effective_workers(workers, len(jobs), ctx.device)},
            "runs": runs, "tstr_dice_ratio": ratio,
            "real_plus_synthetic_gain": (runs["real + synthetic"]["dice"]["mean"] - trtr["dice"]["mean"]
                                         if "real + synthetic" in runs else None),
            "low_data": low_data,
            "leave_one_vendor_out": lovo or lovo_note,
        }
        figures = [self._bars(runs), *([self._lovo_bars(lovo)] if lovo else [])]
        check = self.check(ctx, "utility.tstr_dice_ratio", ratio,
                           details=f"TSTR {tstr['dice']['mean']:.3f} / TRTR {trtr['dice']['mean']:.3f} on "
                           f"{len(test.subjects)} real {test_split.split(' ')[0]} patients; {config.steps} steps each")
        return AuditResult(self.name, self.group, metrics=summary, checks=[check], figures=figures)

    @staticmethod
    def _bars(runs: dict) -> Figure:
        names = [n for n in runs if not n.startswith("LOVO")]
        series = {s: [runs[n]["dice"][s] for n in names] for s in STRUCTURES + ["mean"]}
        png = plots.grouped_bars(names, series, "Dice on real test patients by training data", "Dice", ylim=(0, 1))
        return Figure(name="utility_dice", title="Segmentation utility (Dice)", png=png, public=True,
                      caption="Same network, seed and steps; only the training data differ.")

    @staticmethod
    def _lovo_bars(lovo: dict) -> Figure:
        vendors = list(lovo)
        series = {"without synthetic": [lovo[v]["without_synthetic"] for v in vendors],
                  "with synthetic of V": [lovo[v].get("with_synthetic", np.nan) for v in vendors]}
        png = plots.grouped_bars(vendors, series, "Leave one vendor out: Dice on vendor V", "mean Dice",
                                 ylim=(0, 1))
        return Figure(name="utility_lovo_dice", title="Leave-one-vendor-out Dice", png=png, public=True,
                      caption="Trained on real train without vendor V, tested on V's real test patients.")

