"""Precision, recall, density and coverage of the synthetic set against train, beside real holdout.

PRDC's values depend on the sample sizes and on k, so a matched-size real holdout sample scored
against the same train set is the baseline, and the checks are ratios to it. Precision guards
fidelity (synthetic slices outside the real manifold), coverage guards diversity (real modes no
synthetic slice reaches: mode collapse drives it towards 0).
"""
from __future__ import annotations

from auditors.base import AuditContext, AuditResult, Auditor, Figure, Option, register_auditor

from . import plots
from .prdc import prdc
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

    def run(self, ctx: AuditContext) -> AuditResult:
        k = ctx.option("prdc_k")
        results = {space: prdc_in_space(ctx, space, k) for space in available_spaces()}
        main = results[CHECKED_SPACE]
        series = {}
        for space, res in results.items():
            series[f"synthetic ({space})"] = [res["synthetic"][m] for m in NAMES]
            series[f"real holdout ({space})"] = [res["real_holdout"][m] for m in NAMES]
        png = plots.grouped_bars(list(NAMES), series, "Precision / recall / density / coverage against train",
                                 "value")
        fig = Figure(name="fidelity_prdc", title="PRDC (Naeem et al. 2020)", png=png, public=True,
                     caption=f"k={k}; both sets drawn to {main['slices_per_set']} slices; reference: "
                             f"{main['reference_slices']} train slices.")

        def detail(m):
            return (f"synthetic {main['synthetic'][m]:.3f} / real holdout {main['real_holdout'][m]:.3f} "
                    f"({CHECKED_SPACE} features, k={k})")

        checks = [self.check(ctx, "fidelity.precision_ratio", main["ratio"]["precision"], details=detail("precision")),
                  self.check(ctx, "fidelity.coverage_ratio", main["ratio"]["coverage"], details=detail("coverage"))]
        return AuditResult(self.name, self.group, metrics={"spaces": results, "checked_space": CHECKED_SPACE},
                           checks=checks, figures=[fig])
