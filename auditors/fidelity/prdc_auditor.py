"""Precision, recall, density and coverage of the synthetic set against train, beside real holdout.

PRDC's values depend on the sample sizes and on k, so a matched-size real holdout sample scored
against the same train set is the baseline, and the checks are ratios to it. Precision guards
fidelity (synthetic slices outside the real manifold), coverage guards diversity (real modes no
synthetic slice reaches: mode collapse drives it towards 0).

Intervals resample patients: precision is a mean over synthetic slices of "inside some train ball",
so a replicate re-weights the slices by their patient's draw; coverage asks, for each train ball,
whether ANY drawn patient reaches it, so the nearest slice of every patient to every train slice is
computed once and a replicate takes the minimum over the drawn patients. A bootstrap draws about 63%
distinct patients, which lowers coverage on both sides alike; the ratio's spread is what is read.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import pairwise_distances_chunked

from auditors.base import AuditContext, AuditResult, Auditor, Figure, Option, register_auditor

from . import plots
from .prdc import kth_neighbour_radii, prdc
from .resampling import (bias_aware_bounds, bootstrap_weights, decide_text, matched_plan, patient_index, planning,
                         relative_se)
from .spaces import available_spaces, matched_indices, standardised

DEFAULT_K = 5  # Naeem et al.'s recommended k
CHECKED_SPACE = "segmenter"
NAMES = ("precision", "recall", "density", "coverage")


def prdc_in_space(ctx, space: str, k: int) -> dict:
    feats = standardised(ctx, space)
    idx = matched_indices(ctx)
    syn = prdc(feats["train"], feats["synthetic"][idx["synthetic"]], k)
    real = prdc(feats["train"], feats["holdout"][idx["holdout"]], k)
    ratio = {m: (syn[m] / real[m] if real[m] > 0 else float("nan")) for m in NAMES}
    return {"synthetic": syn, "real_holdout": real, "ratio": ratio, "k": k,
            "slices_per_set": len(idx["holdout"]), "reference_slices": len(feats["train"])}


def patient_parts(train: np.ndarray, radii: np.ndarray, fake: np.ndarray, subject_ids) -> dict:
    """Per fake slice: inside some train ball; per (train slice, fake patient): nearest distance."""
    _, rank = patient_index(subject_ids)
    n_patients = rank.max() + 1
    order = np.argsort(rank, kind="stable")
    starts = np.searchsorted(rank[order], np.arange(n_patients))
    nearest = []  # rows: train slices, columns: fake patients
    inside = np.zeros(len(fake), dtype=bool)

    def reduce(chunk, start):  # chunk: train rows [start, ...) x fake slices
        r = radii[start:start + len(chunk), None]
        inside[:] |= (chunk < r).any(axis=0)
        nearest.append(np.minimum.reduceat(chunk[:, order], starts, axis=1))
        return None

    for _ in pairwise_distances_chunked(train, fake, reduce_func=reduce):
        pass
    return {"inside": inside, "rank": rank, "nearest": np.concatenate(nearest), "patients": int(n_patients)}


def bootstrap_ratios(ctx, space: str, k: int, replicates: int) -> dict:
    """Precision and coverage ratios (synthetic over holdout) with patient-bootstrap bounds."""
    feats = standardised(ctx, space)
    idx = matched_indices(ctx)
    radii = kth_neighbour_radii(feats["train"], k)
    rng = np.random.default_rng([ctx.seed, 18])
    reps, points, patients = {}, {}, {}
    for split in ("synthetic", "holdout"):
        parts = patient_parts(feats["train"], radii, feats[split][idx[split]], getattr(ctx, split).subject_ids[idx[split]])
        w = bootstrap_weights(parts["patients"], replicates, rng)
        per_slice = w[:, parts["rank"]]
        precision = per_slice @ parts["inside"] / per_slice.sum(axis=1)
        reached = parts["nearest"] < radii[:, None]  # (train slices, patients)
        coverage = ((reached.astype(np.float64) @ (w.T > 0)) > 0).mean(axis=0)
        reps[split] = {"precision": precision, "coverage": coverage}
        points[split] = {"precision": float(parts["inside"].mean()), "coverage": float(reached.any(axis=1).mean())}
        patients[split] = parts["patients"]
    out = {}
    for m in ("precision", "coverage"):
        den = reps["holdout"][m]
        r = np.where(den > 0, reps["synthetic"][m] / np.where(den > 0, den, 1.0), np.nan)
        p = points["holdout"][m]
        estimate = points["synthetic"][m] / p if p > 0 else float("nan")
        # Biased replicates: a bootstrap keeps ~63% of the patients, which lowers coverage less for a cohort of
        # repeated patients (mode collapse) than for the holdout, so percentile bounds can exclude the estimate.
        lo, hi = bias_aware_bounds(estimate, r)
        out[m] = {"estimate": estimate, "lower": lo, "upper": hi,
                  "se": float(np.nanstd(r)), "synthetic": points["synthetic"][m], "holdout": p}
    out["patients"] = patients
    return out


@register_auditor
class PRDCAuditor(Auditor):
    name = "prdc"
    options = (Option("prdc_k", int, DEFAULT_K, "nearest neighbours that define each PRDC manifold", low=1, high=100),)
    group = "fidelity"
    default_thresholds = {
        "fidelity.precision_ratio": (0.7, ">=", "share of synthetic slices on the real (train) manifold, over the "
                                                "same share for real holdout slices (segmenter features, k=5)"),
        "fidelity.coverage_ratio": (0.5, ">=", "share of real (train) neighbourhoods reached by a synthetic slice, "
                                               "over the same for real holdout slices: falls with mode collapse"),
    }

    def plan(self, sizes, thresholds, seed: int = 0) -> dict:
        """From the law of the bound measured on the phantom (resampling.BOUND_AT_100), at the matched size."""
        return matched_plan(self.default_thresholds, sizes, thresholds)

    def run(self, ctx: AuditContext) -> AuditResult:
        k = ctx.option("prdc_k")
        replicates = ctx.option("fidelity_bootstrap")
        results = {space: prdc_in_space(ctx, space, k) for space in available_spaces()}
        main = results[CHECKED_SPACE]
        gated = bootstrap_ratios(ctx, CHECKED_SPACE, k, replicates)
        main["gated"] = gated
        series = {}
        for space, res in results.items():
            series[f"synthetic ({space})"] = [res["synthetic"][m] for m in NAMES]
            series[f"real holdout ({space})"] = [res["real_holdout"][m] for m in NAMES]
        png = plots.grouped_bars(list(NAMES), series, "Precision / recall / density / coverage against train",
                                 "value")
        fig = Figure(name="fidelity_prdc", title="PRDC (Naeem et al. 2020)", png=png, public=True,
                     caption=f"k={k}; both sets drawn to {main['slices_per_set']} slices; reference: "
                             f"{main['reference_slices']} train slices.")
        n = min(gated["patients"].values())
        checks = []
        for m in ("precision", "coverage"):
            res, name = gated[m], f"fidelity.{m}_ratio"
            threshold = ctx.threshold(name, self.default_thresholds[name][0])
            checks.append(self.check(
                ctx, name, res["estimate"], lower=res["lower"], upper=res["upper"], confidence=0.95,
                details=f"synthetic {res['synthetic']:.3f} / real holdout {res['holdout']:.3f} ({CHECKED_SPACE} "
                        f"features, k={k}); {replicates} patient bootstraps",
                decide=decide_text(res["estimate"], res["lower"], res["upper"], threshold, ">=", n),
                plan=planning(relative_se(res), 1.0, threshold, ">=")))
        return AuditResult(self.name, self.group, metrics={"spaces": results, "checked_space": CHECKED_SPACE},
                           checks=checks, figures=[fig])
