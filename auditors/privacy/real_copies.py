"""Copies of real patients the generator was not meant to see: the holdout and test patients.

The patient is the unit of privacy, and every real patient the audit holds is one: holdout patients under new
names in the synthetic cohort (a split that leaked into training, or real data passed off as synthetic) passed every
other privacy check, because the copy search compares with the training patients only and a copy of a holdout
patient reads as "closer to holdout", the safe side (measured 2026-12-05: 10 verbatim holdout patients among 100
synthetic ones, 100 / 100 phantom patients at 32 px: near-copy rate, confirmed copies, closer-to-train and both
attacks all PASS; a whole holdout renamed is caught by the attacks, AUC 1.0). Here each synthetic patient is also matched to the holdout patients, and to the
test patients when there are some, with the `robust` copy search of `memorisation` (shifts, small rotations, a
flip and, with `copy_registration`, any turn, either handedness and zooms: a leaked split is copied as training
data is), and confirmed as a copy by the same rule as the
training copies (`near_copies`: above the upper confidence bound of the null's (1 - 0.01 / n) quantile and above
every null patient), each patient scored by its median slice and, with `copy_best_slice`, by its best slice (a few
copied slices inside an otherwise new patient). The null of a reference split is the training patients matched to
it: real patients that are not in it, as the holdout is for the training patients. One confirmed copy fails.
"""
from __future__ import annotations

import numpy as np

from auditors.base import AuditContext, AuditResult, Auditor, CohortSizes, register_auditor

from .calibration import confirm_pass_probability, patient_folds
from .memorisation import CONFIRM_ALPHA, TAU_ALPHA, NNMemorisation, Part, copy_search, near_copies
from .patients import per_patient

CHECK = "privacy.real_patient_copies"
REFERENCES = ("holdout", "test")


def patient_scores(queries, reference, ctx: AuditContext) -> dict[str, np.ndarray]:
    """Per part (`robust`: the median over a patient's slices; with `copy_best_slice`, `best_slice`: the max), per
    patient of `queries` (a SliceSet): its slices' best correlation to any slice of the `reference` SliceSet under
    the `robust` search of `memorisation` (shifts up to `copy_max_shift`, rotations up to `copy_max_rotation`, a
    horizontal flip and, with `copy_registration`, any rotation, either handedness and zooms up to
    `copy_max_zoom`): a leaked split is copied, turned or not, as training data is."""
    codes, subjects = queries.subject_codes()
    ref_codes, _ = reference.subject_codes()
    found = copy_search(ctx, (reference.images, ref_codes), {"queries": (queries.images, codes)}, with_patches=False)
    best = found["queries"]["robust"][0]
    scores = {"robust": per_patient(best, codes, len(subjects), "median")}
    if ctx.option("copy_best_slice"):
        scores["best_slice"] = per_patient(best, codes, len(subjects), "max")
    return scores


@register_auditor
class RealCopiesAuditor(Auditor):
    name = "real_copies"
    group = "privacy"
    default_thresholds = {
        CHECK: (0.0, "<=", "synthetic patients confirmed as copies of a real holdout or test patient (a patient the "
                           "generator should never have seen): a leaked split, or real data under new names"),
    }

    def plan(self, sizes: CohortSizes, thresholds, seed: int = 0) -> dict:
        references = 1 + int(bool(sizes.test))
        parts = 1 + int(next(o.default for o in NNMemorisation.options if o.name == "copy_best_slice"))
        each = confirm_pass_probability(int(sizes.synthetic), int(sizes.train), CONFIRM_ALPHA, 1.0 - TAU_ALPHA)
        return {CHECK: {"honest_pass_probability": max(0.0, 1.0 - references * parts * (1.0 - each)),
                        "smallest_detectable": 1,
                        "detectable_unit": f"copied patients (one confirmed copy fails; {references} real splits, "
                                           f"{parts} scores each)"}}

    def run(self, ctx: AuditContext) -> AuditResult:
        syn_subjects = ctx.synthetic.subjects
        metrics, details = {}, []
        folds = patient_folds(len(ctx.train.subjects), ctx.seed)  # the null is the training patients for every split
        for split in REFERENCES:
            reference = getattr(ctx, split, None)
            if reference is None or not len(reference.subjects):
                continue
            syn = patient_scores(ctx.synthetic, reference, ctx)
            null = patient_scores(ctx.train, reference, ctx)  # real patients not in the reference split
            for part in syn:
                found = near_copies(Part(part, syn[part], null[part], syn[part], np.full(len(syn[part]), -1)),
                                    len(syn[part]), folds)
                names = [syn_subjects[i] for i in found["confirmed"]]
                bar = found.get("confirm_threshold", float("nan"))
                entry = metrics.setdefault(split, {"confirmed": [], "parts": {}})
                entry["confirmed"] = sorted(set(entry["confirmed"]) | set(names))
                entry["parts"][part] = {
                    "confirmed": names, "confirm_threshold": bar,
                    "synthetic_max_score": float(np.nanmax(syn[part])) if len(syn[part]) else float("nan"),
                    "null_max_score": float(np.nanmax(null[part])) if len(null[part]) else float("nan"),
                    "null_patients": int(np.isfinite(null[part]).sum()),
                    "not_calibrated": found.get("not_calibrated", "")}
                details.append(f"{split} {part}: {len(names)} above {bar:.4f}"
                               + (f" ({', '.join(names[:5])}{'...' if len(names) > 5 else ''})" if names else "")
                               + (f" ({found['not_calibrated']}: not checked)" if "not_calibrated" in found else ""))
        n = len({s for m in metrics.values() for s in m["confirmed"]})
        unchecked = [split for split, m in metrics.items() if any(p["not_calibrated"] for p in m["parts"].values())]
        if unchecked and not n:  # a reference that could not be searched shows nothing: not shown safe
            need = (f"{len(ctx.train.subjects)} training patient(s) cannot calibrate the copy threshold for the "
                    f"{' and '.join(unchecked)} patients; about 100 decide it (cmri-release plan)")
            check = self.check(ctx, CHECK, 0.0, 0.0, float(len(syn_subjects)), details="; ".join(details),
                               decide=need)
        else:
            check = self.exact_check(ctx, CHECK, n, details="; ".join(details) or "no holdout or test patients")
        check.plan = self.plan(CohortSizes.of(ctx), {})[CHECK]
        return AuditResult(self.name, self.group, metrics=metrics, checks=[check])
