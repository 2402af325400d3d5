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
`masks` and `masks_centred` (the label maps, which real data brings along, as they are and centred), and
confirmed as a copy by the same rule as the training copies (`near_copies`: above the upper confidence bound of the
null's (1 - 0.01 / n) quantile and above every null patient; shown a copy above its exact bound, between the two
bars inconclusive), each patient scored by its median slice and, with `copy_best_slice`, by its best `robust` slice
(a few copied slices inside an otherwise new patient). The holdout and test patients are searched as one reference (one
confirmation test per score, half the searches); its null is the training patients matched to it: real patients
that are not in it, as the holdout is for the training patients. One confirmed copy fails; the report says which
split each copy's best slice came from.
"""
from __future__ import annotations

import numpy as np

from auditors.base import AuditContext, AuditResult, Auditor, CohortSizes, register_auditor
from cmri_release.core.parallel import map_cpu_jobs
from cmri_release.core.sliceset import SliceSet

from .calibration import confirm_pass_probability, patient_folds
from .memorisation import (CONFIRM_ALPHA, MASK_FORMS, MATCH_SIZE, TAU_ALPHA, NNMemorisation, Part,
                           annotated_mask_images, blend_slices, confirmation_check, copy_search, mask_search,
                           median_where, near_copies)
from .patients import per_patient
from .warp_match import warped_similarity

CHECK = "privacy.real_patient_copies"
REFERENCES = ("holdout", "test")


def real_reference(ctx: AuditContext) -> tuple[SliceSet | None, np.ndarray]:
    """Every real patient the generator was not meant to see, as one reference: the holdout and, when there is one,
    the test split, concatenated; and per reference patient code, the split it comes from. One reference, not one
    per split: a confirmation test per part instead of one per part and split (the plan's union bound on an honest
    pass), and half the searches (measured 2026-12-07 at the demo's sizes: docs/privacy-checks.md)."""
    parts = [(split, getattr(ctx, split, None)) for split in REFERENCES]
    parts = [(split, data) for split, data in parts if data is not None and len(data.subjects)]
    if not parts:
        return None, np.empty(0, dtype=object)
    reference = parts[0][1] if len(parts) == 1 else SliceSet.concat([data for _, data in parts])
    home = {}
    for split, data in reversed(parts):  # a patient id in both splits is one patient: the first split names it
        home.update(dict.fromkeys(data.subjects, split))
    return reference, np.array([home[s] for s in reference.subjects], dtype=object)


def _slices(data: SliceSet) -> tuple:
    """(images, patient codes, phases, positions): what the deformable search reads."""
    return data.images, data.subject_codes()[0], data.phases, data.slice_pos


def patient_scores(queries: SliceSet, reference: SliceSet, ctx: AuditContext, names: tuple[str, str]
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per part, per patient of `queries`: its slices' best correlation to any slice of `reference`, each patient
    scored by its median slice (`robust`, `smoothed`, `warped`) and, with `copy_best_slice`, by its best slice under
    `robust` (`best_slice`); and per patient, the reference patient code its best `robust` slice matched (who it
    copies, when it is a copy). The views are those of `memorisation`:
    `robust` the small-transform search (shifts up to `copy_max_shift`, rotations up to `copy_max_rotation`, a
    horizontal flip) and, with `copy_registration`, the registered search (any turn, either handedness, zooms up to
    `copy_max_zoom`); with `copy_smoothing_px`, the small search on blurred slices (copies under strong noise); with
    `copy_warp`, the deformable registration (copies under an elastic warp). A leaked split is copied, bent or
    noised as training data is: measured 2026-12-06, 10 holdout patients warped by 1.5 px among 100 synthetic ones
    passed this check when it had the `robust` view only. `names`: (queries, reference), the cache keys of their
    label maps."""
    codes, subjects = queries.subject_codes()
    ref_codes, _ = reference.subject_codes()
    smoothing = float(ctx.option("copy_smoothing_px"))
    found = copy_search(ctx, (reference.images, ref_codes), {"queries": (queries.images, codes)},
                        with_patches=False, smoothing=smoothing, blend_slices=blend_slices(ctx))["queries"]
    views = {"robust": found["robust"][0]}
    if smoothing > 0:
        views["smoothed"] = found["smoothed"][0]
    if ctx.option("copy_warp"):
        views["warped"] = warped_similarity(_slices(queries), _slices(reference),
                                            ctx.option("copy_warp_patients"), MATCH_SIZE)[0]
    scores = {view: per_patient(best, codes, len(subjects), "median") for view, best in views.items()}
    if ctx.option("copy_best_slice"):
        # the robust view only: every confirmation test is one more chance of an honest false alarm (the plan's union
        # bound), and a leaked split brings whole patients; partial bent or noised copies are the training search's
        scores["best_slice"] = per_patient(views["robust"], codes, len(subjects), "max")
    if ctx.option("audit_masks") and reference.has_label.any():  # no reference label map: nothing to copy
        scores.update(_mask_scores(queries, reference, ctx, names))
    return scores, _matched_patient(found["robust"][:2], codes, len(subjects), ref_codes)


def _matched_patient(robust: tuple[np.ndarray, np.ndarray], codes: np.ndarray, n: int, ref_codes: np.ndarray
                     ) -> np.ndarray:
    """Per query patient, the reference patient code of its best-scoring slice's match (-1 when none)."""
    best, match = robust
    order = np.lexsort((-np.nan_to_num(best, nan=-np.inf), codes))  # by patient, its best slice first
    first = order[np.r_[True, codes[order][1:] != codes[order][:-1]]]
    out = np.full(n, -1, dtype=np.int64)
    ok = (match[first] >= 0) & np.isfinite(best[first])  # a patient without a scored slice matched no one
    out[codes[first][ok]] = ref_codes[match[first][ok]]
    return out


def _mask_scores(queries: SliceSet, reference: SliceSet, ctx: AuditContext, names: tuple[str, str]
                 ) -> dict[str, np.ndarray]:
    """`masks` and `masks_centred`: per patient of `queries`, the median over its annotated slices of their label
    maps' best `robust` correlation to the `reference` label maps, as they are and centred (NaN for a patient
    without one: never confirmed, not in the null), as `memorisation`'s mask parts: real data under new names brings
    its label maps along, which no image noise hides (measured 2026-12-06: holdout copies under noise of sd 0.2
    were found by no image view)."""
    codes, subjects = queries.subject_codes()
    ref_codes, _ = reference.subject_codes()
    (rows, images), (ref_rows, ref_images) = (annotated_mask_images(ctx, name, data)
                                              for data, name in zip((queries, reference), names))
    if not len(rows):
        return {label: np.full(len(subjects), np.nan) for label in MASK_FORMS}
    return {label: median_where(mask_search(ctx, (ref_images, ref_codes[ref_rows]), {"queries": (images, codes[rows])},
                                            centre)["queries"][0], codes[rows], len(subjects))
            for label, centre in MASK_FORMS.items()}


def _max_score(scores: np.ndarray) -> float:
    """The highest finite patient score (NaN when none: e.g. no annotated slice for the masks part)."""
    finite = scores[np.isfinite(scores)]
    return float(finite.max()) if len(finite) else float("nan")


def default_parts() -> list[str]:
    """The parts `patient_scores` gives under the default options (each one a confirmation test)."""
    defaults = {o.name: o.default for o in NNMemorisation.options}
    views = ["robust"] + ["smoothed"] * (defaults["copy_smoothing_px"] > 0) + ["warped"] * bool(defaults["copy_warp"])
    masks = list(MASK_FORMS) if defaults["audit_masks"] else []
    return views + ["best_slice"] * bool(defaults["copy_best_slice"]) + masks


@register_auditor
class RealCopiesAuditor(Auditor):
    name = "real_copies"
    group = "privacy"
    default_thresholds = {
        CHECK: (0.0, "<=", "synthetic patients confirmed as copies of a real holdout or test patient (a patient the "
                           "generator should never have seen): a leaked split, or real data under new names"),
    }

    def plan(self, sizes: CohortSizes, thresholds, seed: int = 0) -> dict:
        parts = len(default_parts())
        each = confirm_pass_probability(int(sizes.synthetic), int(sizes.train), CONFIRM_ALPHA, 1.0 - TAU_ALPHA)
        splits = "holdout and test patients together" if sizes.test else "holdout patients"
        return {CHECK: {"honest_pass_probability": max(0.0, 1.0 - parts * (1.0 - each)),
                        "smallest_detectable": 1,
                        "detectable_unit": f"copied patients (one confirmed copy fails; {splits}, {parts} scores)"}}

    def run(self, ctx: AuditContext) -> AuditResult:
        syn_subjects = ctx.synthetic.subjects
        reference, home = real_reference(ctx)
        if reference is None:
            check = self.exact_check(ctx, CHECK, 0, details="no holdout or test patients")
            check.plan = self.plan(CohortSizes.of(ctx), {})[CHECK]
            return AuditResult(self.name, self.group, metrics={}, checks=[check])
        splits = sorted(set(home), key=REFERENCES.index)
        if ctx.option("audit_masks") and reference.has_label.any():
            annotated_mask_images(ctx, "real_reference", reference)  # cached once, before both searches use it
        # the synthetic patients and the null (real patients that are not in the reference, as the holdout is for
        # the training patients), side by side, one CPU core each
        (syn, matched), (null, _) = map_cpu_jobs(
            lambda job: patient_scores(job[0], reference, ctx, (job[1], "real_reference")),
            [(ctx.synthetic, "synthetic"), (ctx.train, "train")], desc="real-patient copy search")
        folds = patient_folds(len(ctx.train.subjects), ctx.seed)
        metrics = {"reference_splits": splits, "reference_patients": len(reference.subjects), "confirmed": [],
                   "parts": {}, **{split: {"confirmed": []} for split in splits}}
        details, confirmed, unsettled, settle = [], set(), set(), []
        for part in syn:
            found = near_copies(Part(part, syn[part], null[part], syn[part], np.full(len(syn[part]), -1)),
                                len(syn[part]), folds)
            confirmed |= set(int(i) for i in found["confirmed"])
            unsettled |= set(int(i) for i in found["unsettled"])
            if found["unsettled"]:
                settle.append(found["holdout_to_settle"])
            names = [syn_subjects[i] for i in found["confirmed"]]
            bar = found.get("shown_threshold", float("nan"))
            metrics["parts"][part] = {
                "confirmed": names, "confirm_threshold": found.get("confirm_threshold", float("nan")),
                "shown_threshold": bar, "unsettled": [syn_subjects[i] for i in found["unsettled"]],
                "synthetic_max_score": _max_score(syn[part]), "null_max_score": _max_score(null[part]),
                "null_patients": int(np.isfinite(null[part]).sum()),
                "not_calibrated": found.get("not_calibrated", "")}
            details.append(f"{part}: {len(names)} above {bar:.4f}"
                           + (f" ({', '.join(names[:5])}{'...' if len(names) > 5 else ''})" if names else "")
                           + (f", {len(found['unsettled'])} between {found['confirm_threshold']:.4f} and it"
                              if found["unsettled"] else "")
                           + (f" ({found['not_calibrated']}: not checked)" if "not_calibrated" in found else ""))
        for i in sorted(confirmed):  # whose copy: the split of the real patient its best slice matched
            split = home[matched[i]] if matched[i] >= 0 else splits[0]
            metrics[split]["confirmed"].append(syn_subjects[i])
        metrics["confirmed"] = sorted(syn_subjects[i] for i in confirmed)
        metrics["unsettled"] = sorted(syn_subjects[i] for i in unsettled - confirmed)
        where = f"{' and '.join(splits)} patients ({len(reference.subjects)})"
        per_split = ", ".join(f"{len(metrics[s]['confirmed'])} of the {s}" for s in splits)
        details = [f"against the {where}: {per_split}"] + details
        unchecked = any(p["not_calibrated"] for p in metrics["parts"].values())
        if unchecked and not confirmed:  # a reference that could not be searched shows nothing: not shown safe
            need = (f"{len(ctx.train.subjects)} training patient(s) cannot calibrate the copy threshold for the "
                    f"{where}; about 100 decide it (cmri-release plan)")
            check = self.check(ctx, CHECK, 0.0, 0.0, float(len(syn_subjects)), details="; ".join(details),
                               decide=need)
        else:
            check = confirmation_check(self, ctx, CHECK, confirmed, unsettled, settle, "; ".join(details),
                                       reference="training set")
        check.plan = self.plan(CohortSizes.of(ctx), {})[CHECK]
        return AuditResult(self.name, self.group, metrics=metrics, checks=[check])
