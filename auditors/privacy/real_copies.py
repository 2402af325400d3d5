"""Copies of real patients the generator was not meant to see: the holdout and test patients.

The patient is the unit of privacy, and every real patient the audit holds is one: holdout patients under new
names in the synthetic cohort (a split that leaked into training, or real data passed off as synthetic) passed every
other privacy check, because the copy search compares with the training patients only and a copy of a holdout
patient reads as "closer to holdout", the safe side (measured 2026-12-05: 10 verbatim holdout patients among 100
synthetic ones, 100 / 100 phantom patients at 32 px: near-copy rate, confirmed copies, closer-to-train and both
attacks all PASS; a whole holdout renamed is caught by the attacks, AUC 1.0). Here each synthetic patient is also
matched to the holdout patients, and to the test patients when there are some, with the copy views of
`memorisation` (a leaked split is copied, turned, bent or noised as training data is): `robust` (shifts, small
rotations, a flip and, with `copy_registration`, any turn, either handedness and zooms), `smoothed` (the same on
blurred slices: strong noise), `warped` (a deformable registration: an elastic warp) and, with `audit_masks`,
`masks` (the label maps, which real data brings along), and confirmed as a copy by the same rule as the training
copies (`near_copies`: above the upper confidence bound of the null's (1 - 0.01 / n) quantile and above every null
patient), each patient scored by its median slice and, with `copy_best_slice`, by its best `robust` slice (a few
copied slices inside an otherwise new patient). The null of a reference split is the training patients matched to it:
real patients that are not in it, as the holdout is for the training patients. One confirmed copy fails.
"""
from __future__ import annotations

import numpy as np

from auditors.base import AuditContext, AuditResult, Auditor, CohortSizes, register_auditor

from .calibration import confirm_pass_probability, patient_folds
from .memorisation import (CONFIRM_ALPHA, MATCH_SIZE, TAU_ALPHA, NNMemorisation, Part, annotated_mask_images,
                           blend_slices, copy_search, median_where, near_copies)
from .patients import per_patient
from .warp_match import warped_similarity

CHECK = "privacy.real_patient_copies"
REFERENCES = ("holdout", "test")


def _split_tuple(slices) -> tuple:
    """(images, patient codes, phases, positions): what the deformable search reads."""
    return slices.images, slices.subject_codes()[0], slices.phases, slices.slice_pos


def patient_scores(query_split: str, reference_split: str, ctx: AuditContext) -> dict[str, np.ndarray]:
    """Per part, per patient of the split `query_split`: its slices' best correlation to any slice of the split
    `reference_split`, each patient scored by its median slice (`robust`, `smoothed`, `warped`) and, with `copy_best_slice`, by
    its best slice under `robust` (`best_slice`). The views are those of `memorisation`:
    `robust` the small-transform search (shifts up to `copy_max_shift`, rotations up to `copy_max_rotation`, a
    horizontal flip) and, with `copy_registration`, the registered search (any turn, either handedness, zooms up to
    `copy_max_zoom`); with `copy_smoothing_px`, the small search on blurred slices (copies under strong noise); with
    `copy_warp`, the deformable registration (copies under an elastic warp). A leaked split is copied, bent or
    noised as training data is: measured 2026-12-06, 10 holdout patients warped by 1.5 px among 100 synthetic ones
    passed this check when it had the `robust` view only."""
    queries, reference = getattr(ctx, query_split), getattr(ctx, reference_split)
    codes, subjects = queries.subject_codes()
    ref_codes, _ = reference.subject_codes()
    smoothing = float(ctx.option("copy_smoothing_px"))
    found = copy_search(ctx, (reference.images, ref_codes), {"queries": (queries.images, codes)},
                        with_patches=False, smoothing=smoothing, blend_slices=blend_slices(ctx))["queries"]
    views = {"robust": found["robust"][0]}
    if smoothing > 0:
        views["smoothed"] = found["smoothed"][0]
    if ctx.option("copy_warp"):
        views["warped"] = warped_similarity(_split_tuple(queries), _split_tuple(reference),
                                            ctx.option("copy_warp_patients"), MATCH_SIZE)[0]
    scores = {view: per_patient(best, codes, len(subjects), "median") for view, best in views.items()}
    if ctx.option("copy_best_slice"):
        # the robust view only: every confirmation test is one more chance of an honest false alarm (the plan's union
        # bound), and a leaked split brings whole patients; partial bent or noised copies are the training search's
        scores["best_slice"] = per_patient(views["robust"], codes, len(subjects), "max")
    if ctx.option("audit_masks") and reference.has_label.any():  # no reference label map: nothing to copy
        scores["masks"] = _mask_scores(query_split, reference_split, ctx)
    return scores


def _mask_scores(query_split: str, reference_split: str, ctx: AuditContext) -> np.ndarray:
    """`masks`: per patient of `queries`, the median over its annotated slices of their label maps' best `robust`
    correlation to the `reference` split's label maps (NaN for a patient without one: never confirmed, not in the
    null), as `memorisation`'s masks part: real data under new names brings its label maps along, which no image
    noise hides (measured 2026-12-06: holdout copies under noise of sd 0.2 were found by no image view)."""
    codes, subjects = getattr(ctx, query_split).subject_codes()
    ref_codes, _ = getattr(ctx, reference_split).subject_codes()
    (rows, images), (ref_rows, ref_images) = (annotated_mask_images(ctx, s) for s in (query_split, reference_split))
    if not len(rows):
        return np.full(len(subjects), np.nan)
    found = copy_search(ctx, (ref_images, ref_codes[ref_rows]), {"queries": (images, codes[rows])}, with_patches=False,
                        turned_moves=False)  # label maps: as the memorisation auditor's masks part
    return median_where(found["queries"]["robust"][0], codes[rows], len(subjects))


def _max_score(scores: np.ndarray) -> float:
    """The highest finite patient score (NaN when none: e.g. no annotated slice for the masks part)."""
    finite = scores[np.isfinite(scores)]
    return float(finite.max()) if len(finite) else float("nan")


def default_parts() -> list[str]:
    """The parts `patient_scores` gives under the default options (each one a confirmation test)."""
    defaults = {o.name: o.default for o in NNMemorisation.options}
    views = ["robust"] + ["smoothed"] * (defaults["copy_smoothing_px"] > 0) + ["warped"] * bool(defaults["copy_warp"])
    return views + ["best_slice"] * bool(defaults["copy_best_slice"]) + ["masks"] * bool(defaults["audit_masks"])


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
        parts = len(default_parts())
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
            syn = patient_scores("synthetic", split, ctx)
            null = patient_scores("train", split, ctx)  # real patients not in the reference split
            for part in syn:
                found = near_copies(Part(part, syn[part], null[part], syn[part], np.full(len(syn[part]), -1)),
                                    len(syn[part]), folds)
                names = [syn_subjects[i] for i in found["confirmed"]]
                bar = found.get("confirm_threshold", float("nan"))
                entry = metrics.setdefault(split, {"confirmed": [], "parts": {}})
                entry["confirmed"] = sorted(set(entry["confirmed"]) | set(names))
                entry["parts"][part] = {
                    "confirmed": names, "confirm_threshold": bar,
                    "synthetic_max_score": _max_score(syn[part]), "null_max_score": _max_score(null[part]),
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
