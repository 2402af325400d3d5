"""Utility: does a segmenter trained with the synthetic cohort work on, and gain on, real patients?

Segmenters with one architecture, seed and step budget are trained on different data and all tested
on real patients that neither the generator nor any segmenter saw (the test split; the holdout when no
test split is given, which the metrics then say):

- TRTR: real train (the fidelity auditors' segmenter, shared);
- TSTR: synthetic only; check `utility.tstr_dice_ratio` = TSTR / TRTR mean Dice;
- real + synthetic; check `utility.mixed_dice_gain` = its Dice minus TRTR's;
- low data: a vendor-stratified fifth of the real train patients, with and without the synthetic slices;
  check `utility.low_data_dice_gain`;
- leave one vendor out: real train without vendor V, tested on V, with and without the synthetic slices
  of V (can the generator fill a missing scanner?); check `utility.lovo_dice_gain`, the worst vendor.

Every figure is paired over the same real test patients, with a patient bootstrap interval (paired.py);
per structure and per vendor figures are reported beside the checks.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from auditors.base import (AuditContext, AuditResult, Auditor, CohortSizes, Figure, Option, Verdict,
                           register_auditor, worst_case)
from auditors.fidelity import plots
from auditors.segmentation.parallel import effective_workers
from auditors.segmentation.train import audit_train_config, real_train_segmenter, train_segmenter
from cmri_release.core.errors import CmriError
from cmri_release.core.sliceset import SliceSet
from cmri_release.core.splits import split_subjects

from . import paired, planning

DEFAULT_LOW_DATA_FRACTION = 0.2
EXPERIMENTS = ("mixed", "lovo", "low_data")  # beside TRTR and TSTR, which the check needs and always run
STRUCTURES = list(paired.STRUCTURES)
TRTR, TSTR, MIXED = "TRTR (real train)", "TSTR (synthetic only)", "real + synthetic"


def low_data_subjects(train: SliceSet, fraction: float, seed: int) -> list[str]:
    """A vendor-stratified `fraction` of the train patients (at least one), every vendor rounded on its own so that
    each is represented (12 patients of 3 vendors at 20%: one per vendor, not 2 patients of 2 vendors)."""
    try:
        return split_subjects(train.subject_vendor(), {"low": fraction, "rest": 1 - fraction}, seed,
                              exact_totals=False)["low"]
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


def _segmenter_job(job, *, config, seed: int, device: str, share: float | None
                   ) -> tuple[dict, paired.PatientDice]:
    """Train one segmenter on a job's real and/or synthetic slices and score it per test patient: a plain function
    of picklable data, so that any executor (a thread here, a Ray task elsewhere) can run it."""
    name, real, syn, on = job
    start = time.perf_counter()
    parts = [p for p in (real, syn) if p is not None and len(p)]
    data = SliceSet.concat(parts)
    mixed = len(parts) == 2  # real + synthetic: the batches may hold a fixed synthetic share
    is_syn = np.arange(len(data)) >= len(parts[0]) if mixed else None
    segmenter = train_segmenter(data, config, seed=seed, device=device, quiet=True, desc=f"segmenter: {name}",
                                second=is_syn, second_share=share if mixed else None)
    scores = paired.patient_dice(segmenter.predict(on.images), on)
    return {**_composition(real, syn), **scores.summary(), "seconds": round(time.perf_counter() - start, 2)}, scores


@dataclass(frozen=True)
class Comparison:
    """One paired figure: run `treated` against run `baseline` on the same test patients."""
    check: str  # the check it feeds
    label: str  # e.g. "low data (20% real) + synthetic vs alone", "GE"
    treated: str
    baseline: str
    kind: str  # "difference" or "ratio"


def compare(c: Comparison, runs: dict[str, paired.PatientDice], confidence: float, n_resamples: int,
            seed: int, fail_confidence: float | None = None) -> dict:
    """The comparison's interval on the patient mean (and at `fail_confidence`, the fail side of a check over
    several parts), per structure and per vendor (reports only)."""
    a, b = runs[c.treated], runs[c.baseline]
    if a.subjects != b.subjects:
        raise RuntimeError(f"{c.label}: the two segmenters were tested on different patients")
    fn = paired.paired_ratio if c.kind == "ratio" else paired.paired_difference
    out = {"overall": fn(a.mean, b.mean, confidence, n_resamples, seed)}
    out["fail_side"] = (out["overall"] if fail_confidence in (None, confidence)
                        else fn(a.mean, b.mean, fail_confidence, n_resamples, seed))
    out["by_structure"] = {s: fn(a.by_structure[s], b.by_structure[s], confidence, n_resamples, seed)
                           for s in STRUCTURES}
    vendors = sorted(set(a.vendors.tolist()))
    out["by_vendor"] = {v: fn(a.mean[a.vendors == v], b.mean[b.vendors == v], confidence, n_resamples, seed)
                        for v in vendors} if len(vendors) > 1 else {}
    return out


@register_auditor
class SegmentationUtilityAuditor(Auditor):
    name = "segmentation_utility"
    group = "utility"
    options = (
        Option("utility_experiments", "str-list", EXPERIMENTS, "utility experiments run beside TRTR and TSTR "
               "(none: those two only)", choices=EXPERIMENTS + ("none",)),
        Option("utility_low_data_fraction", float, DEFAULT_LOW_DATA_FRACTION,
               "share of real training patients in the low-data experiment", low=0.01, high=1.0),
        Option("utility_synthetic_share", float, None, "share of synthetic slices in every batch of a segmenter "
               "trained on real + synthetic data (default: as pooled, by slice count)", low=0.0, high=1.0),
        Option("utility_bootstrap", int, 4000, "patient resamples for the utility intervals", low=100,
               high=1000000),
        Option("utility_confidence", float, 0.95, "one-sided confidence of each bound of the utility intervals",
               low=0.5, high=0.9999),
    )
    default_thresholds = planning.DEFAULT_THRESHOLDS

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
        confidence, n_boot = ctx.option("utility_confidence"), ctx.option("utility_bootstrap")
        share = ctx.option("utility_synthetic_share")
        jobs, comparisons, notes = self._plan_jobs(ctx, train, synthetic, test, wanted)

        run = functools.partial(_segmenter_job, config=config, seed=ctx.seed, device=ctx.device, share=share)

        start = time.perf_counter()
        trtr = paired.patient_dice(real_train_segmenter(ctx).predict(test.images), test)
        runs = {TRTR: {**_composition(train, None), **trtr.summary(),
                       "seconds": round(time.perf_counter() - start, 2)}}
        scores = {TRTR: trtr}
        workers = ctx.option("segmenter_workers")
        for (name, *_), (summary, s) in zip(jobs, ctx.map_jobs(run, jobs, workers=workers,
                                                                desc="utility segmenters")):
            runs[name], scores[name] = summary, s

        n_parts = {c.check: sum(o.check == c.check for o in comparisons) for c in comparisons}
        results = {c: compare(c, scores, confidence, n_boot, ctx.seed, 1 - (1 - confidence) / n_parts[c.check])
                   for c in comparisons}
        sizes = CohortSizes.of(ctx)
        checks = []
        for check_name in planning.DEFAULT_THRESHOLDS:
            parts = [c for c in comparisons if c.check == check_name]
            if parts:
                checks.append(self._check(ctx, check_name, parts, results, confidence, n_boot, sizes,
                                          len(test.subjects)))
        summary = {
            "test_split": test_split, "test_slices": len(test), "test_subjects": len(test.subjects),
            "confidence": confidence, "bootstrap": n_boot,
            "budget": {"utility_epochs": ctx.option("utility_epochs"), "steps_per_segmenter": config.steps,
                       "batch_size": config.batch_size, "segmenters": len(runs),
                       "synthetic_share": "as pooled" if share is None else share,
                       "trained_at_once": effective_workers(workers, len(jobs), ctx.device)},
            "runs": runs,
            "paired": self._records(results),
            "tstr_dice_ratio": results[comparisons[0]]["overall"].estimate,
            **notes,
        }
        figures = [self._bars(runs), self._gain_plot(results)]
        return AuditResult(self.name, self.group, metrics=summary, checks=checks, figures=figures)

    def _plan_jobs(self, ctx, train: SliceSet, synthetic: SliceSet, test: SliceSet, wanted):
        """The segmenters to train (name, real, synthetic, tested on) and the paired comparisons they feed."""
        jobs = [(TSTR, None, synthetic, test)]
        comparisons = [Comparison("utility.tstr_dice_ratio", "TSTR / TRTR", TSTR, TRTR, "ratio")]
        notes = {}
        if "mixed" in wanted:
            jobs.append((MIXED, train, synthetic, test))
            comparisons.append(Comparison("utility.mixed_dice_gain", "real + synthetic - real", MIXED, TRTR,
                                          "difference"))
        if "low_data" in wanted:
            fraction = ctx.option("utility_low_data_fraction")
            few = train.for_subjects(low_data_subjects(train, fraction, ctx.seed))
            alone, more = f"low data ({fraction:.0%} real)", f"low data ({fraction:.0%} real) + synthetic"
            jobs += [(alone, few, None, test), (more, few, synthetic, test)]
            comparisons.append(Comparison("utility.low_data_dice_gain", f"{fraction:.0%} real + synthetic - "
                                          f"{fraction:.0%} real", more, alone, "difference"))
        else:
            notes["low_data"] = "not run: not among the requested utility experiments"
        train_vendors = set(train.vendor_names)
        if "lovo" in wanted and len(train_vendors) >= 2:
            skipped = {}
            for vendor in test.vendor_names:
                syn_v = synthetic.select(synthetic.vendors == vendor)
                if vendor not in train_vendors or not len(syn_v):
                    skipped[vendor] = ("not in the real train split" if vendor not in train_vendors
                                       else "no synthetic slice of this vendor")
                    continue
                rest, on = train.select(train.vendors != vendor), test.select(test.vendors == vendor)
                without, with_syn = f"LOVO {vendor}: real without {vendor}", f"LOVO {vendor}: + synthetic {vendor}"
                jobs += [(without, rest, None, on), (with_syn, rest, syn_v, on)]
                comparisons.append(Comparison("utility.lovo_dice_gain", vendor, with_syn, without, "difference"))
            if skipped:
                notes["leave_one_vendor_out_skipped"] = skipped
        else:
            notes["leave_one_vendor_out"] = ("not run: the real train split holds fewer than two vendors"
                                             if "lovo" in wanted else
                                             "not run: not among the requested utility experiments")
        return jobs, comparisons, notes

    def _check(self, ctx, name: str, parts: list[Comparison], results: dict, confidence: float, n_boot: int,
               sizes: CohortSizes, n_test: int):
        """One check over its comparisons: the worst part (leave-one-vendor-out: every vendor must pass).

        The pass side takes each part's bound at `confidence` (intersection-union: no correction needed); the
        fail side takes each part's Bonferroni-widened bound, so that more vendors do not mean more false alarms.
        """
        default, op, _ = self.default_thresholds[name]
        threshold = ctx.threshold(name, default)
        label, estimate, lower, upper = worst_case([(p.label, *self._bounds(results[p]["overall"])) for p in parts],
                                                   op)
        _, _, fail_lower, fail_upper = worst_case([(p.label, *self._bounds(results[p]["fail_side"]))
                                                   for p in parts], op)
        if op == ">=":
            upper = fail_upper
        else:
            lower = fail_lower
        sd = max(results[p]["overall"].sd for p in parts)
        n_part = min(results[p]["overall"].n for p in parts)
        distance = abs(estimate - threshold) if estimate is not None and np.isfinite(estimate) else float("nan")
        needed = paired.patients_needed(distance, sd, confidence)
        if needed is None:
            decide = "more real test patients would narrow the interval"
        elif len(parts) > 1:
            decide = (f"about {needed} real test patients of each vendor ({needed * len(parts)} in all) would decide "
                      f"a gain {distance:.3f} from the threshold with 80% probability (paired SD {sd:.3f})")
        else:
            decide = (f"about {needed} real test patients would decide a value {distance:.3f} from the threshold "
                      f"with 80% probability (paired SD {sd:.3f})")
        details = "; ".join(f"{p.label}: {results[p]['overall'].estimate:.3f} [{results[p]['overall'].lower:.3f}, "
                            f"{results[p]['overall'].upper:.3f}]" for p in parts)
        details += (f"; paired over {n_part}{'+' if len(parts) > 1 else ''} real test patients, {n_boot} patient "
                    f"bootstraps (BCa), each bound one-sided {confidence:.0%}"
                    + (f"; worst: {label}; fail side Bonferroni over {len(parts)}" if len(parts) > 1 else ""))
        plan = planning.plan_one(name, sizes, threshold, confidence, measured_sd=sd)
        return self.check(ctx, name, estimate, lower, upper, confidence, details=details, decide=decide, plan=plan)

    @staticmethod
    def _bounds(i: paired.Interval):
        return i.estimate, i.lower, i.upper

    def plan(self, sizes: CohortSizes, thresholds: dict[str, float], seed: int = 0) -> dict[str, dict]:
        return {name: planning.plan_one(name, sizes, thresholds.get(name, default), 0.95)
                for name, (default, _, _) in self.default_thresholds.items()}

    @staticmethod
    def _records(results: dict) -> list[dict]:
        rows = []
        for c, r in results.items():
            for scope, interval in ([("all", r["overall"])] + [(s, i) for s, i in r["by_structure"].items()]
                                    + [(f"vendor {v}", i) for v, i in r["by_vendor"].items()]):
                rows.append({"check": c.check, "comparison": c.label, "scope": scope, "estimate": interval.estimate,
                             "lower": interval.lower, "upper": interval.upper, "patients": interval.n,
                             "paired_sd": interval.sd})
        return rows

    @staticmethod
    def _bars(runs: dict) -> Figure:
        names = [n for n in runs if not n.startswith("LOVO")]
        series = {s: [runs[n]["dice"][s] for n in names] for s in STRUCTURES + ["mean"]}
        png = plots.grouped_bars(names, series, "Dice on real test patients by training data", "Dice", ylim=(0, 1))
        return Figure(name="utility_dice", title="Segmentation utility (Dice)", png=png, public=True,
                      caption="Same network, seed and steps; only the training data differ. Patient means.")

    @staticmethod
    def _gain_plot(results: dict) -> Figure:
        labels = [c.label if c.check != "utility.lovo_dice_gain" else f"LOVO {c.label}" for c in results]
        est = [r["overall"].estimate - (1.0 if c.kind == "ratio" else 0.0) for c, r in results.items()]
        err = [(r["overall"].lower - (1.0 if c.kind == "ratio" else 0.0),
                r["overall"].upper - (1.0 if c.kind == "ratio" else 0.0)) for c, r in results.items()]
        png = plots.grouped_bars(labels, {"paired difference": est}, "Paired Dice differences on real test "
                                 "patients (ratio - 1 for TSTR / TRTR)", "Dice difference",
                                 errors={"paired difference": err})
        return Figure(name="utility_gains", title="Utility gains with their intervals", png=png, public=True,
                      caption="Each bar: the patient mean of a paired difference, with its bootstrap interval.")
