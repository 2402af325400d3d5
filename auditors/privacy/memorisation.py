"""Nearest-neighbour memorisation: copies of training patients, and closeness to train vs holdout.

Every statement is per patient. A synthetic patient's copy score, in one view of the data, is the median
over its slices of the best similarity to any training slice. The views ("parts"), each gated, the check
taking the worst (an intersection-union test: adding a part can only make the gate stricter):

- `robust`: the best Pearson correlation over shifts of up to `copy_max_shift` px, rotations up to
  `copy_max_rotation` degrees and a horizontal flip, and (`copy_registration`) over rotations by any angle,
  either handedness and zooms up to `copy_max_zoom` (robust_match.py), and (`copy_max_translation`) over
  translations of up to that many px on the overlap, under turns, mirrors and the same zooms (translate_match.py);
  correlation ignores gain and offset;
- `best_slice` (`copy_best_slice`): the same search, scored by the patient's BEST slice instead of its median
  one: a few training slices inside an otherwise new patient are real patients' images released all the same
  (a median over the slices does not see a quarter of them copied); its null is the holdout patients' best
  slices, so it compares like with like (`smoothed_best_slice` and `warped_best_slice`: the same for the
  `smoothed` and `warped` views below);
- `patches` (`copy_patches`): the mean over a 4 x 4 tiling of each tile's best correlation within 2 px, each
  tile shifted on its own: a copy under a smooth warp is a shifted copy tile by tile;
- `smoothed` (`copy_smoothing_px` > 0): the small-transform search of `robust` on slices blurred by that many
  px (Gaussian sd, at MATCH_SIZE) on both sides: strong noise over a copy hides it from the full-resolution
  correlation, not from its blurred form;
- `warped` (`copy_warp`): the correlation after a deformable registration (a smooth displacement field on an
  8 x 8 lattice) to the slices of the `copy_warp_patients` training patients that register best (warp_match.py):
  a copy bent by an elastic warp keeps its patient's texture and noise, which the registration brings back;
- each feature space of `feature_spaces` (`pixels`: plain correlation; `embedding`: learned, cosine);
- `masks` and `masks_centred` (option `audit_masks`): the label maps, a release channel of their own, as they are
  and centred on their foreground (mask_features.py).

Near copies: a patient is a near copy when its score exceeds tau, the 99th percentile of real new
patients' scores (holdout patients vs train; normal fit on Fisher z, calibration.py), so a real new patient
is flagged 1% of the time. The rate's bounds carry tau's uncertainty (flags counted at tau's lower bound
for the upper rate bound, at its upper bound for the lower one) and the binomial error (Clopper-Pearson):
at confidence 1 - TAU_ALPHA - RATE_ALPHA per side (union bound). The holdout's out-of-sample baseline is
cross-fitted: each fold judged by the tau of the other fold.

Confirmed copies: a patient whose score exceeds the (1 - CONFIRM_ALPHA / n_synthetic) quantile of the
null (at its upper confidence bound) and every real holdout patient's score, in a confirming part (robust,
best_slice, patches, smoothed, smoothed_best_slice, warped, warped_best_slice, masks or masks_centred): an honest
cohort has any such patient with probability about CONFIRM_ALPHA per part (at most 9 x CONFIRM_ALPHA in all, union
bound). One fails the release.

Closer to train (closer.py): the share of synthetic patients closer to the whole training set than to
holdout, in balanced subsamples; an honest generator gives 0.5.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy import stats

from auditors.base import AuditContext, AuditResult, Auditor, CohortSizes, Figure, Option, register_auditor, worst_case
from auditors.features import features
from cmri_release.core.parallel import map_cpu_jobs
from cmri_release.core.sliceset import SliceSet

from .calibration import (TailThreshold, confirm_pass_probability, cross_fitted_flags, fit_tail, holdout_to_confirm,
                          pass_probability, patient_folds, patients_to_decide, proportion_interval, smallest_detectable)
from .closer import closer_scores, patient_max_similarity
from .mask_features import centred, mask_images, mask_vectors
from .neighbours import NeighbourIndex, index_for
from .patients import per_patient
from .blend_match import blend_similarity, fine_detail
from .translate_match import ANGLE_STEP, moved_candidates, translated_similarity, translation_angles
from .robust_match import (blurred, candidates, patch_similarity, registered_similarity, robust_similarity,
                           transformed_candidates, zoom_bank)
from .warp_match import warped_similarity

COPY_LEVEL = 0.99  # a real new patient is a near copy 1% of the time
TAU_ALPHA = 0.025  # one-sided error of tau's bounds
RATE_ALPHA = 0.025  # one-sided error of the rate's binomial bounds
CONFIRM_ALPHA = 0.01  # chance that an honest cohort has any confirmed copy (family-wise over its patients)
CLOSER_ALPHA = 0.05  # one-sided error of each bound of the closer-to-train share
MATCH_SIZE = 32  # slices are matched at this side (copies are exact at any resolution)
FIGURE_PATIENTS, FIGURE_SLICES = 4, 8
# parts whose matches are shown and can confirm a copy
CONFIRMING_PARTS = ("robust", "best_slice", "patches", "smoothed", "smoothed_best_slice", "warped",
                    "warped_best_slice", "masks", "masks_centred")


@dataclass
class Part:
    """One view's per-patient copy scores: synthetic and (the null) holdout, and each synthetic slice's match."""
    label: str
    synthetic: np.ndarray  # (n_synthetic,) per patient the median (the *best_slice parts: the max) of its slices' scores
    holdout: np.ndarray  # (n_holdout,)
    slice_scores: np.ndarray  # (synthetic slices,) best similarity
    slice_match: np.ndarray  # (synthetic slices,) index of the best training slice
    # (synthetic slices, 3) [flipped, degrees, zoom] where the registered search made the match, else NaN
    slice_transform: np.ndarray | None = None


def feature_spaces(ctx: AuditContext) -> list[str]:
    """The feature spaces every privacy auditor compares slices in (shared option)."""
    return list(ctx.option("feature_spaces"))


def _per_patient(values: np.ndarray, split, how: str = "median") -> np.ndarray:
    codes, patients = split.subject_codes()
    return per_patient(values, codes, len(patients), how)


def small_rotations(ctx: AuditContext) -> tuple[float, ...]:
    """The rotations of the small-transform copy search (degrees): none, and +-`copy_max_rotation` when set."""
    angle = ctx.option("copy_max_rotation")
    return (-angle, 0.0, angle) if angle > 0 else (0.0,)


def better_of(current: tuple[np.ndarray, np.ndarray], found: tuple[np.ndarray, np.ndarray]
              ) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Per slice, of two (scores, matches): the better score and its match, and where `found` was the better."""
    better = found[0] > current[0]
    return (np.where(better, found[0], current[0]), np.where(better, found[1], current[1])), better


def copy_search(ctx: AuditContext, train: tuple[np.ndarray, np.ndarray],
                queries: dict[str, tuple[np.ndarray, np.ndarray]], with_patches: bool,
                smoothing: float = 0.0, blend_slices: int = 0, turned_moves: bool = True) -> dict[str, dict]:
    """Per split (synthetic, holdout), from (images, patient codes) of the training slices and of each split's
    slices: each slice's best robust correlation to the training slices (the best of the small-transform search,
    with `copy_registration` the registered search, with `copy_max_translation` the search over translations of
    that many px (translate_match.py) and with `blend_slices` > 0 the blend fit on that many training slices:
    blend_match.py), its match and transform, with `with_patches` the patches similarity and with
    `smoothing` > 0 the small-transform search (and the translations) on slices blurred by that sd (px). With
    `turned_moves` and `copy_translation_max_rotation` > 0, the translations also turn (translate_match.py).

    The blend fit and the translations join `robust` rather than making parts of their own: the part's bar is
    fitted on the holdout's scores of the same best-of statistic, so they cost no extra test (a new part would
    lower the plan's union bound on an honest pass), and a real new patient's slice is almost always matched better by the
    whole-slice search than by the fine-detail fit (measured: its median fine-detail R 0.63)."""
    train, tr_codes = train
    shift = ctx.option("copy_max_shift")
    zoom = ctx.option("copy_max_zoom")
    scales = zoom_bank(zoom)
    rotations = small_rotations(ctx)
    translation = ctx.option("copy_max_translation")
    train_blurred = blurred(train, smoothing, MATCH_SIZE) if smoothing > 0 else None  # once for every split
    train_detail = fine_detail(train, MATCH_SIZE) if blend_slices else None  # likewise

    def search(split_data: tuple[np.ndarray, np.ndarray]) -> dict:
        images, codes = split_data
        if not len(images):  # e.g. a split without annotated slices in the masks part
            return {"robust": (np.empty(0), np.empty(0, np.int64), np.empty((0, 3))),
                    "patches": (np.empty(0), np.empty(0, np.int64)),
                    "smoothed": (np.empty(0), np.empty(0, np.int64))}
        cand = candidates(images, codes, train, tr_codes, patients=ctx.option("copy_candidate_patients"),
                          size=MATCH_SIZE)
        tiles = patch_similarity(images, train, cand, size=MATCH_SIZE) if with_patches else None
        best, match = robust_similarity(images, train, cand, size=MATCH_SIZE, max_shift=shift, rotations=rotations)
        query_blurred = blurred(images, smoothing, MATCH_SIZE) if smoothing > 0 else None
        smoothed = robust_similarity(query_blurred, train_blurred, cand, size=MATCH_SIZE, max_shift=shift,
                                     rotations=rotations) if smoothing > 0 else None
        transform = np.full((len(best), 3), np.nan)
        if ctx.option("copy_registration"):
            spectra = []  # the candidates' vote keeps its spectra for the registered search's prefilter
            cand = transformed_candidates(images, codes, train, tr_codes,
                                          patients=ctx.option("copy_registered_patients"),
                                          size=MATCH_SIZE, scales=scales, keep_spectra=spectra)
            reg, reg_match, reg_transform = registered_similarity(images, train, cand, size=MATCH_SIZE,
                                                                  max_shift=shift, scales=scales,
                                                                  return_transform=True, undone=spectra,
                                                                  curve=ctx.option("copy_intensity_curve"))
            (best, match), better = better_of((best, match), (reg, reg_match))
            transform[better] = reg_transform[better]
        if translation:
            patients = ctx.option("copy_candidate_patients")
            far = candidates(images, codes, train, tr_codes, patients=patients, size=MATCH_SIZE, margin=0,
                             window="tukey")
            turns = translation_angles(ctx.option("copy_translation_max_rotation") if turned_moves else 0.0)
            turned = {}
            if len(turns) > 1:  # turned as well as moved: a direct search finds what the spectra miss
                moved, turn, mirrored = moved_candidates(
                    images, codes, train, tr_codes, turns, min(translation, 6), patients=patients, size=MATCH_SIZE,
                    ivf_lists=ctx.option("nn_ivf_lists"), nprobe=ctx.option("nn_nprobe"),
                    orientations=ctx.option("copy_translation_orientations"))
                turned = dict(turn=turn, turned_from=far.shape[1], nudge=ANGLE_STEP / 2, mirrored=mirrored)
                far = np.concatenate([far, moved], axis=1)
            # zoomed and moved (a memorised random resized crop): the full-resolution view only (label maps are
            # centred instead; on blurred slices the zooms' freedom confirmed an honest patient at an 8-patient
            # holdout, 2026-12-07)
            zoomed = dict(turned, zooms=scales) if turned_moves else turned
            (best, match), better = better_of((best, match), translated_similarity(
                images, train, far, MATCH_SIZE, translation, **zoomed))
            transform[better] = np.nan
            if smoothed is not None:  # moved by a fraction of a pixel too (interpolated: a blur) and under noise
                smoothed, _ = better_of(smoothed, translated_similarity(
                    query_blurred, train_blurred, far, MATCH_SIZE, translation, **turned))
        if blend_slices:
            (best, match), better = better_of((best, match), blend_similarity(
                images, train, blend_slices, MATCH_SIZE, reference_detail=train_detail))
            transform[better] = np.nan
        return {"robust": (best, match, transform), "patches": tiles, "smoothed": smoothed}

    # the splits side by side, one CPU core each (each split's search is its own: the same numbers either way)
    return dict(zip(queries, map_cpu_jobs(search, list(queries.values()), desc="copy search")))


def _part(ctx: AuditContext, label: str, found: dict[str, dict], view: str = "robust", how: str = "median") -> Part:
    """A part from `copy_search`'s per-slice figures of one view (robust, patches or smoothed) over every slice, each
    patient scored by the `how` ("median" or "max") of its slices."""
    syn, hold = found["synthetic"][view], found["holdout"][view]
    return Part(label, _per_patient(syn[0], ctx.synthetic, how), _per_patient(hold[0], ctx.holdout, how), *syn)


def median_where(values: np.ndarray, codes: np.ndarray, n_patients: int) -> np.ndarray:
    """Per patient the median of its listed slices; NaN for a patient with none."""
    out = np.full(n_patients, np.nan)
    present, remapped = np.unique(codes, return_inverse=True)
    if len(present):
        out[present] = per_patient(values, remapped, len(present), "median")
    return out


def annotated_mask_images(ctx: AuditContext, split: str, data: SliceSet | None = None
                          ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The rows of a split's annotated slices and their label maps as images (mask_features.mask_images), as they
    are and `centred` on their foreground, computed once per audit. `data`: slices under the name `split` that are
    not one of the context's splits (e.g. the holdout and test patients together)."""
    data = getattr(ctx, split) if data is None else data
    rows = np.flatnonzero(data.has_label)
    return rows, ctx.shared(f"mask_images.{split}", lambda: (mask_images(data.labels[rows], MATCH_SIZE),
                                                              mask_images(centred(data.labels[rows]), MATCH_SIZE)))


MASK_FORMS = {"masks": False, "masks_centred": True}  # each mask part: its maps as they are, or centred


def mask_search(ctx: AuditContext, reference: tuple[tuple[np.ndarray, np.ndarray], np.ndarray],
                queries: dict[str, tuple[tuple[np.ndarray, np.ndarray], np.ndarray]], centre: bool
                ) -> dict[str, tuple]:
    """Per split of `queries`: each label map's best `robust` (score, match, transform) to the `reference` maps, the
    maps as they are or (`centre`) centred on their foreground (mask_features.centred). `reference` and each query:
    ((maps as they are, centred), patient codes), as `annotated_mask_images` gives them. Two parts, not the better
    of the two forms in one: the better of two lifts real new hearts toward the centred form's scores, and maps
    turned by 20 degrees about the field of view's centre (exact as they are) fell from 10 of 10 confirmed to 5
    (measured 2026-12-07, docs/privacy-checks.md)."""
    form = int(bool(centre))
    # label maps: moves, not the turned-and-moved search (the images carry it; centred, the maps need none)
    found = copy_search(ctx, (reference[0][form], reference[1]),
                        {s: (maps[form], codes) for s, (maps, codes) in queries.items()}, False, turned_moves=False)
    return {s: found[s]["robust"] for s in queries}


def _mask_parts(ctx: AuditContext) -> list[Part]:
    """`masks` and `masks_centred`: the annotated slices' label maps as images (mask_features.mask_images) under the
    `robust` search, as they are and centred on their foreground (`mask_search`). Only annotated slices take part:
    an unannotated real slice has no map to resemble (scored, it would sink the null and flag every synthetic
    patient). A patient without one has no score (NaN: never flagged, not in the null); synthetic slices without a
    map have no score and no match (-1). None when no training slice is annotated (there is no map to copy)."""
    rows, sets = {}, {}
    for split in ("train", "synthetic", "holdout"):
        rows[split], images = annotated_mask_images(ctx, split)
        sets[split] = (images, getattr(ctx, split).subject_codes()[0][rows[split]])
    if not len(rows["train"]):
        return []  # no training label map: nothing the masks could copy
    reference = sets.pop("train")
    n_syn_slices, parts = len(ctx.synthetic.images), []
    for label, centre in MASK_FORMS.items():
        found = mask_search(ctx, reference, sets, centre)
        best, match, transform = found["synthetic"]
        scores, matches = np.full(n_syn_slices, np.nan), np.full(n_syn_slices, -1, dtype=np.int64)
        turned = np.full((n_syn_slices, 3), np.nan)
        scores[rows["synthetic"]], turned[rows["synthetic"]] = best, transform
        matches[rows["synthetic"]] = rows["train"][match]  # back to indices of the whole training split
        parts.append(Part(label, median_where(best, sets["synthetic"][1], len(ctx.synthetic.subjects)),
                          median_where(found["holdout"][0], sets["holdout"][1], len(ctx.holdout.subjects)), scores,
                          matches, turned))
    return parts


def copy_parts(ctx: AuditContext) -> list[Part]:
    """The pixel-level copy views, each on its own candidate patients: `robust`, per slice the better of the
    small-transform search (shifts, small rotations, a flip) and, with `copy_registration`, the registered search
    (any angle, either handedness, zooms up to `copy_max_zoom`); with `copy_best_slice`, `best_slice` (the same
    search, each patient scored by its best slice: a few copied slices; with `copy_smoothing_px` and `copy_warp`
    also `smoothed_best_slice` and `warped_best_slice`); with `copy_patches`, `patches` (each tile of the
    slice matched on its own: copies under a smooth warp); with `copy_smoothing_px`, `smoothed` (the small search
    on blurred slices: copies under strong noise); with `copy_warp`, `warped` (a deformable registration: copies
    under an elastic warp); with `audit_masks`, `masks`: the label maps as images
    (mask_features.mask_images) under the same search as `robust`, a mask generator's copies turned or shifted.
    With `copy_blend`, `robust` (and `best_slice`) also take the blend fit: copies of several patients blended."""
    with_patches, smoothing = ctx.option("copy_patches"), ctx.option("copy_smoothing_px")
    found = copy_search(ctx, (ctx.train.images, ctx.train.subject_codes()[0]),
                    {s: (getattr(ctx, s).images, getattr(ctx, s).subject_codes()[0]) for s in ("synthetic", "holdout")},
                    with_patches, smoothing, blend_slices(ctx))
    parts = [_part(ctx, "robust", found)]
    best_slice = ctx.option("copy_best_slice")
    if best_slice:
        parts.append(_part(ctx, "best_slice", found, how="max"))
    if with_patches:
        parts.append(_part(ctx, "patches", found, "patches"))
    if smoothing > 0:
        parts.append(_part(ctx, "smoothed", found, "smoothed"))
        if best_slice:
            parts.append(_part(ctx, "smoothed_best_slice", found, "smoothed", how="max"))
    if ctx.option("copy_warp"):
        parts += _warped_parts(ctx, best_slice)
    return parts + (_mask_parts(ctx) if ctx.option("audit_masks") else [])


def _warped_parts(ctx: AuditContext, best_slice: bool) -> list[Part]:
    """`warped`: each synthetic and holdout slice's correlation to a training slice after a deformable registration,
    each patient scored by its median slice; with `best_slice`, also `warped_best_slice` (by its best slice)."""
    def split(name):
        data = getattr(ctx, name)
        return data.images, data.subject_codes()[0], data.phases, data.slice_pos

    reference, patients = split("train"), ctx.option("copy_warp_patients")
    bar = None if ctx.quiet else "copy search, warped: {}"
    (syn, match), (hold, _) = map_cpu_jobs(  # the two splits side by side, one CPU core each
        lambda name: warped_similarity(split(name), reference, patients, MATCH_SIZE, desc=bar and bar.format(name)),
        ["synthetic", "holdout"], desc="copy search, warped")
    views = [("warped", "median")] + ([("warped_best_slice", "max")] if best_slice else [])
    return [Part(label, _per_patient(syn, ctx.synthetic, how), _per_patient(hold, ctx.holdout, how), syn, match)
            for label, how in views]


def blend_slices(ctx: AuditContext) -> int:
    """The training slices the `robust` view's blend fit combines (0: no blend fit)."""
    return ctx.option("copy_blend_slices") if ctx.option("copy_blend") else 0


def transform_text(transform) -> str:
    """How the registered search turned a synthetic slice to match (empty for the small search's matches)."""
    if transform is None or not np.all(np.isfinite(transform)):
        return ""
    flipped, degrees, zoom = transform
    degrees = (float(degrees) + 180.0) % 360.0 - 180.0
    parts = ["flipped"] if flipped else []
    parts.append(f"{degrees:+.0f} deg")
    if abs(zoom - 1.0) > 1e-3:
        parts.append(f"x{zoom:.2f}")
    return ", ".join(parts)


def vector_part(label: str, train: np.ndarray, synthetic: np.ndarray, holdout: np.ndarray, ctx: AuditContext,
                index: NeighbourIndex | None = None) -> Part:
    index = index or NeighbourIndex(train, metric="ip", batch_size=ctx.option("nn_batch_size"))
    sim_s, id_s = index.search(synthetic, 1)
    sim_h, _ = index.search(holdout, 1)
    return Part(label, _per_patient(sim_s[:, 0], ctx.synthetic), _per_patient(sim_h[:, 0], ctx.holdout),
                sim_s[:, 0].astype(np.float64), id_s[:, 0])


def part_vectors(ctx: AuditContext) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(train, synthetic, holdout) vectors of every feature space and, with `audit_masks`, of the label maps."""
    out = {space: tuple(features(ctx, space, split) for split in ("train", "synthetic", "holdout"))
           for space in feature_spaces(ctx)}
    if ctx.option("audit_masks"):
        out["masks"] = tuple(ctx.shared(f"masks.{split}", lambda s=split: mask_vectors(getattr(ctx, s).labels))
                             for split in ("train", "synthetic", "holdout"))
    return out


def near_copies(part: Part, n_synthetic: int, folds: np.ndarray) -> dict:
    """The near-copy rate of one part with its tau-aware bounds, the cross-fitted holdout baseline and the
    confirmed copies. Patients without a score (NaN: no annotated slice, masks part) are never flagged and do not
    enter the null; a null of fewer than MIN_CALIBRATION_PATIENTS patients shows nothing (bounds 0 and 1)."""
    scored = np.isfinite(part.holdout)
    null, synthetic = part.holdout[scored], np.where(np.isfinite(part.synthetic), part.synthetic, -np.inf)
    if len(null) < MIN_CALIBRATION_PATIENTS:
        return {"not_calibrated": f"{len(null)} holdout patient(s) with a score; {MIN_CALIBRATION_PATIENTS} needed",
                "near_copies": 0, "near_copy_rate": 0.0, "lower": 0.0, "upper": 1.0, "confirmed": [],
                "tau": float("nan"), "tau_low": float("nan"), "tau_high": float("nan"), "baseline_rate": float("nan"),
                "confirm_threshold": float("nan"), "shown_threshold": float("nan"), "unsettled": [],
                "holdout_to_settle": None}
    tail = fit_tail(null, COPY_LEVEL, 1.0 - TAU_ALPHA)
    k = int((synthetic > tail.tau).sum())
    k_low, k_high = int((synthetic > tail.tau_high).sum()), int((synthetic > tail.tau_low).sum())
    lower, upper = proportion_interval(k_low, k_high, n_synthetic, 1.0 - RATE_ALPHA)
    confirm = fit_tail(null, 1.0 - CONFIRM_ALPHA / n_synthetic, 1.0 - TAU_ALPHA)
    confirm_at = max(confirm.tau_high, float(null.max()))
    # two bars: under the first (the delta-method bound) a patient is cleared; above the second (the exact bound,
    # higher in a small null's far tail) it is shown a copy; between them the null is too small to tell
    shown_at = max(confirm_at, float(np.tanh(confirm.exact_z_high())))
    confirming = part.label in CONFIRMING_PARTS
    confirmed = np.flatnonzero(synthetic > shown_at) if confirming else np.array([], int)
    unsettled = np.flatnonzero((synthetic > confirm_at) & (synthetic <= shown_at)) if confirming else np.array([], int)
    return {"tau": tail.tau, "tau_low": tail.tau_low, "tau_high": tail.tau_high, "near_copies": k,
            "near_copy_rate": k / n_synthetic, "lower": lower, "upper": upper,
            "baseline_rate": float(cross_fitted_flags(null, folds[scored], COPY_LEVEL).mean()),
            "confirm_threshold": confirm_at, "shown_threshold": shown_at, "confirmed": confirmed.tolist(),
            "unsettled": unsettled.tolist(),
            "holdout_to_settle": settle_size(synthetic[unsettled], confirm),
            "synthetic_median_score": float(np.nanmedian(part.synthetic)) if np.isfinite(part.synthetic).any()
            else float("nan"),
            "holdout_median_score": float(np.median(null)), "holdout_max_score": float(null.max())}


def settle_size(scores: np.ndarray, confirm: TailThreshold) -> int | None:
    """The holdout size at which every score between the two bars would be shown a copy (None: none there, or no
    size shows the lowest of them at this null)."""
    if not len(scores):
        return None
    return holdout_to_confirm(float(np.min(scores)), confirm)


def confirmation_check(auditor: Auditor, ctx: AuditContext, name: str, confirmed: set, unsettled: set,
                       sizes: list[int | None], details: str, reference: str = "holdout"):
    """A count of copies under the three verdicts: `confirmed` patients (above the exact bar: shown copies) are
    its lower bound, those and the `unsettled` ones (between the bars) its estimate and upper bound; pass needs
    nobody above the lower bar. `sizes`: per part with unsettled patients, the reference size that settles them."""
    unsettled = unsettled - confirmed
    if not unsettled:
        return auditor.exact_check(ctx, name, len(confirmed), details=details)
    known = [n for n in sizes if n]
    decide = (f"{len(unsettled)} synthetic patient(s) score between the bars: a {reference} of about {max(known)} "
              "patients would show whether they are copies" if len(known) == len(sizes) and known else
              f"{len(unsettled)} synthetic patient(s) score between the bars and a larger {reference} may not settle "
              "them: inspect them beside their matches in the internal report")
    total = len(confirmed) + len(unsettled)
    return auditor.check(ctx, name, total, len(confirmed), total, 1.0 - TAU_ALPHA, decide=decide,
                         details=details + f"; {len(unsettled)} between the bars")


def plan_flag_rate(sizes: CohortSizes, threshold: float, unit: str) -> dict:
    """The plan of a rate gated as `near_copies` gates it: exact binomial sums over the synthetic patients, averaged
    over the fitted tau's sampling distribution (Gauss-Hermite): an honest patient is flagged at tau's lower bound
    with probability 1 - Phi(z_hat - z_conf se); a flagged-by-construction patient (a copy) always is."""
    tail = TailThreshold(COPY_LEVEL, 0.0, 1.0, max(sizes.holdout, 3), 1.0 - TAU_ALPHA)
    low, q, high = tail.z_bounds()
    nodes, weights = np.polynomial.hermite_e.hermegauss(24)
    weights = weights / weights.sum()
    honest = sum(w * pass_probability(sizes.synthetic, float(stats.norm.sf(low + x * tail.se)), threshold,
                                      1.0 - RATE_ALPHA) for x, w in zip(nodes, weights))
    return {"honest_pass_probability": float(honest),
            "smallest_detectable": smallest_detectable(sizes.synthetic, float(stats.norm.sf(high)), threshold,
                                                       1.0 - RATE_ALPHA),
            "detectable_unit": unit}


def flag_rate_decide(found: dict, threshold: float) -> str:
    """The `decide` text of a rate that `near_copies` computed: what calibration it lacks, or what size decides it."""
    if "not_calibrated" in found:
        return (f"{found['not_calibrated']}: about 100 holdout patients decide it at the default threshold "
                "(cmri-release plan)")
    return rate_decide(found["near_copy_rate"], threshold)


def rate_decide(rate: float, threshold: float) -> str:
    """What cohort would decide a rate gated as `near_copies` gates it (the check's `decide` text)."""
    need = patients_to_decide(rate, threshold, 1.0 - RATE_ALPHA)
    return (f"about {need} synthetic patients (and a holdout of the same size) at this rate would decide it"
            if need else "the rate sits on the threshold: a much larger cohort is needed")


def closer_share(ctx: AuditContext, vectors: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict:
    train, synthetic, holdout = vectors
    tr_codes, tr = ctx.train.subject_codes()
    ho_codes, ho = ctx.holdout.subject_codes()
    syn_codes, syn = ctx.synthetic.subject_codes()
    scores, how = closer_scores(patient_max_similarity(synthetic, train, tr_codes, len(tr)),
                                patient_max_similarity(synthetic, holdout, ho_codes, len(ho)), syn_codes, len(syn),
                                ctx.option("closer_subsamples"), ctx.seed)
    k = float(scores.sum())  # a fractional count: Clopper-Pearson through the beta quantiles
    n = len(syn)
    lower = 0.0 if k <= 0 else float(stats.beta.ppf(CLOSER_ALPHA, k, n - k + 1))
    upper = 1.0 if k >= n else float(stats.beta.ppf(1.0 - CLOSER_ALPHA, k + 1, n - k))
    return {"share": k / n, "lower": lower, "upper": upper, "closer_patients": k, "balancing": how}


def matches_figure(ctx: AuditContext, part: Part, order: list[int], title: str, what: str = "images",
                   reference: str = "train") -> Figure:
    """Each listed synthetic patient's slices (top row) above the `reference` split's slices they match (training
    slices are real patients: internal only), slice by slice; `what`: "images" or "labels" (the label maps, for
    the masks part)."""
    from matplotlib.figure import Figure as MplFigure

    syn_codes, syn = ctx.synthetic.subject_codes()
    rows = max(len(order), 1) * 2
    fig = MplFigure(figsize=(1.2 * FIGURE_SLICES, 1.3 * rows), dpi=80)
    shown = {"cmap": "gray"} if what == "images" else {"cmap": "viridis", "vmin": 0, "vmax": 3,
                                                       "interpolation": "nearest"}
    for r, patient in enumerate(order):
        slices = np.flatnonzero((syn_codes == patient) & (part.slice_match >= 0))
        # its best matches first: a patient with a few copied slices shows them
        slices = slices[np.argsort(-part.slice_scores[slices], kind="stable")][:FIGURE_SLICES]
        for c, s in enumerate(slices):
            t = int(part.slice_match[s])
            turned = transform_text(None if part.slice_transform is None else part.slice_transform[s])
            label = f"{syn[patient]} {part.slice_scores[s]:.3f}" + (f"\n({turned})" if turned else "")
            for row, (image, text) in enumerate(((getattr(ctx.synthetic, what)[s], label),
                                                 (getattr(getattr(ctx, reference), what)[t],
                                                  str(getattr(ctx, reference).subject_ids[t])))):
                ax = fig.add_subplot(rows, FIGURE_SLICES, (2 * r + row) * FIGURE_SLICES + c + 1)
                ax.imshow(image, **shown)
                ax.set_title(text, fontsize=6)
                ax.axis("off")
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    kind = "slices" if what == "images" else "label maps"
    return Figure(name="copies_robust" if what == "images" else "copies_masks", title=title, png=buf.getvalue(),
                  public=False,
                  caption=f"Per synthetic patient, its {kind} (upper row, with the robust correlation) above the "
                          f"training {kind} they match best (lower row): real patients, internal report only. "
                          "In brackets, how the registered search turned the synthetic slice to match.")


MIN_CALIBRATION_PATIENTS = 6  # tau is fitted on each cross-fitted half, and a fit needs 3 patients (a spread)


@register_auditor
class NNMemorisation(Auditor):
    name = "nn_memorisation"
    group = "privacy"
    default_thresholds = {
        "privacy.near_copy_rate": (
            0.20, "<=",
            "share of synthetic patients more similar to a training patient than 99% of real new patients are "
            "(robust correlation over shifts, rotations and flips; feature spaces; masks), worst part; bounds "
            "carry the calibration's uncertainty"),
        "privacy.confirmed_copies": (
            0.0, "<=",
            "synthetic patients confirmed as copies of a training patient (beyond every real new patient and the "
            "family-wise 1% tail of their fit); any one fails the release"),
        "privacy.closer_to_train_share": (
            0.70, "<=",
            "share of synthetic patients closer to the whole training set than to holdout (balanced subsamples), "
            "worst feature space; an honest generator gives 0.5"),
    }
    options = (
        Option("copy_max_shift", int, 3, "largest shift (pixels at 32 px) the copy matcher forgives", low=0, high=8),
        Option("copy_max_translation", int, 8, "the `robust` view also correlates each slice with candidates found "
               "in a shift-tolerant spectrum space over translations up to this many px (at 32 px) on their overlap "
               "(the better score counts): copies moved beyond copy_max_shift; 0: off", low=0, high=8),
        Option("copy_translation_max_rotation", float, 15.0, "the translation search also looks for copies turned "
               "by up to this angle either way and moved beyond copy_max_shift (a direct search over turns 5 degrees "
               "apart finds their candidates); 0: moves only", low=0.0, high=45.0),
        Option("copy_translation_orientations", int, 8, "the turned translation search turns each slice about this "
               "many orientations: 1, as it is; 4, also mirrored either way and turned by 180 degrees; 8, also "
               "turned by 90 degrees either way and transposed (copies of a generator trained with flips or quarter "
               "turns, moved beyond copy_max_shift; with copy_translation_max_rotation > 0, whose 0 turns the direct "
               "search off); its work grows with it", choices=(1, 4, 8)),
        Option("copy_max_rotation", float, 5.0, "largest rotation (degrees) the copy matcher forgives", low=0.0,
               high=30.0),
        Option("copy_registration", bool, True, "also register each slice to its candidates over any rotation, "
               "either handedness and zooms up to copy_max_zoom (copies turned, transposed or rescaled)"),
        Option("copy_intensity_curve", bool, True, "the registered search's fine step scores the best quadratic "
               "intensity curve (gamma and other smooth curves), not only gain and offset"),
        Option("copy_max_zoom", float, 1.3, "largest zoom (either way) the registered copy search and the "
               "translation search forgive (a bank of zooms at most 1.15 apart: 5 at 1.3; 1: none)", low=1.0,
               high=1.5),
        Option("copy_registered_patients", int, 3, "training patients the registered search tries per synthetic "
               "patient (its candidates vote under any rotation, so one more than the small search)", low=1, high=100),
        Option("copy_best_slice", bool, True, "also score each patient by its best-matching slice (`best_slice` "
               "and, with copy_smoothing_px and copy_warp, `smoothed_best_slice` and `warped_best_slice` parts, "
               "calibrated on the holdout's best slices and gated like the others): a few copied slices inside an "
               "otherwise new patient"),
        Option("copy_patches", bool, True, "also match each 7 x 7-px tile of a slice on its own (a `patches` part, "
               "calibrated and gated like the others): copies under a smooth warp"),
        Option("copy_smoothing_px", float, 1.0, "also search the slices blurred by this Gaussian sd (px at 32 px; a "
               "`smoothed` part, calibrated and gated like the others): copies under strong noise; 0: off", low=0.0,
               high=4.0),
        Option("copy_warp", bool, True, "also register each slice to its best training candidates by a smooth "
               "deformation (a `warped` part, calibrated and gated like the others): copies under an elastic warp"),
        Option("copy_warp_patients", int, 2, "training patients the deformable search registers per synthetic "
               "patient (chosen by a coarse registration of three slices against every training patient)", low=1,
               high=100),
        Option("copy_blend", bool, True, "the `robust` view also fits each slice's fine detail by its nearest "
               "training slices' (the better score counts): copies of several patients blended together"),
        Option("copy_blend_slices", int, 8, "training slices a `blend` fit may combine", low=2, high=64),
        Option("copy_candidate_patients", int, 2, "training patients searched exactly per synthetic patient", low=1,
               high=100),
        Option("audit_masks", bool, True, "audit the synthetic label maps against the training label maps too"),
        Option("closer_subsamples", int, 200, "balanced subsamples of the larger of train and holdout", low=1),
    )

    def run(self, ctx: AuditContext) -> AuditResult:
        result = AuditResult(auditor=self.name, group=self.group)
        n_syn = len(ctx.synthetic.subjects)
        if len(ctx.holdout.subjects) < MIN_CALIBRATION_PATIENTS:
            return self._too_small(ctx, result)
        vectors = part_vectors(ctx)
        parts = copy_parts(ctx)
        for label, (train, synthetic, holdout) in vectors.items():
            if label != "masks":  # the label maps' copy part is the image search on them (copy_parts)
                parts.append(vector_part(label, train, synthetic, holdout, ctx, index_for(ctx, label, "train")))
        folds = patient_folds(len(ctx.holdout.subjects), ctx.seed)
        copies = {p.label: near_copies(p, n_syn, folds) for p in parts}
        closer = {label: closer_share(ctx, v) for label, v in vectors.items()}
        result.metrics = {"near_copies": copies, "closer_to_train": closer, "copy_level": COPY_LEVEL,
                          "synthetic_patients": n_syn}
        syn = ctx.synthetic.subjects
        confirmed = sorted({i for label in CONFIRMING_PARTS if label in copies for i in copies[label]["confirmed"]})
        unsettled = sorted({i for label in CONFIRMING_PARTS if label in copies for i in copies[label]["unsettled"]}
                           - set(confirmed))
        result.metrics["confirmed_copies"] = [syn[i] for i in confirmed]
        result.metrics["unsettled_copies"] = [syn[i] for i in unsettled]
        result.checks += [self._near_copy_check(ctx, copies, n_syn), self._confirmed_check(ctx, copies, syn),
                          self._closer_check(ctx, closer, n_syn)]
        robust = parts[0]
        shown = ((confirmed + unsettled)[:FIGURE_PATIENTS]
                 or list(np.argsort(-robust.synthetic, kind="stable")[:FIGURE_PATIENTS]))
        result.figures.append(matches_figure(
            ctx, robust, [int(i) for i in shown],
            "confirmed copies beside their training patients" if confirmed else
            "possible copies (between the bars) beside their training patients" if unsettled else
            "synthetic patients closest to a training patient (no confirmed copy)"))
        masks = next((p for p in parts if p.label in MASK_FORMS
                      and copies[p.label]["confirmed"] + copies[p.label]["unsettled"]), None)
        if masks is not None:  # a mask generator's copies: show the label maps beside the training maps they copy
            found = copies[masks.label]
            by_masks = (found["confirmed"] + found["unsettled"])[:FIGURE_PATIENTS]
            result.figures.append(matches_figure(
                ctx, masks, [int(i) for i in by_masks],
                "label maps confirmed as copies beside the training maps" if found["confirmed"] else
                "label maps between the copy bars beside the training maps", what="labels"))
        return result

    def _too_small(self, ctx, result: AuditResult) -> AuditResult:
        """A holdout too small to calibrate a copy threshold (cross-fitted halves of 3 patients at least) can show
        nothing either way: every check is inconclusive over its whole range, and says the size that would decide."""
        need = (f"{len(ctx.holdout.subjects)} holdout patient(s) cannot calibrate the copy threshold: at least "
                f"{MIN_CALIBRATION_PATIENTS} are needed to run, about 100 to decide at the default thresholds "
                "(cmri-release plan)")
        result.metrics = {"not_run": need}
        for name, (lower, upper) in (("privacy.near_copy_rate", (0.0, 1.0)),
                                     ("privacy.confirmed_copies", (0.0, float(len(ctx.synthetic.subjects)))),
                                     ("privacy.closer_to_train_share", (0.0, 1.0))):
            result.checks.append(self.check(ctx, name, (lower + upper) / 2, lower, upper, details=need, decide=need))
        return result

    def _near_copy_check(self, ctx, copies: dict, n_syn: int):
        label, estimate, lower, upper = worst_case(
            [(label, c["near_copy_rate"], c["lower"], c["upper"]) for label, c in copies.items()], "<=")
        w = copies[label]
        threshold = ctx.threshold("privacy.near_copy_rate", self.default_thresholds["privacy.near_copy_rate"][0])
        decide = rate_decide(estimate, threshold)
        parts = "; ".join(f"{k}: not calibrated, {c['not_calibrated']}" if "not_calibrated" in c else
                          f"{k}: {c['near_copies']}/{n_syn} [{c['lower']:.3f}, {c['upper']:.3f}] baseline "
                          f"{c['baseline_rate']:.3f}" for k, c in copies.items())
        return self.check(ctx, "privacy.near_copy_rate", estimate, lower, upper,
                          1.0 - TAU_ALPHA - RATE_ALPHA, decide=decide,
                          plan=self._plan_near(CohortSizes.of(ctx), threshold),
                          details=f"worst part {label} (tau {w['tau']:.4f}, bounds at tau {w['tau_high']:.4f} and "
                                  f"{w['tau_low']:.4f}); {parts}")

    def _confirmed_check(self, ctx, copies: dict, syn: list[str]):
        parts = [label for label in CONFIRMING_PARTS if label in copies]
        found = {label: [syn[i] for i in copies[label]["confirmed"]] for label in parts}
        between = {label: [syn[i] for i in copies[label]["unsettled"]] for label in parts}
        check = confirmation_check(
            self, ctx, "privacy.confirmed_copies", {s for names in found.values() for s in names},
            {s for names in between.values() for s in names},
            [copies[label]["holdout_to_settle"] for label in parts if between[label]], "; ".join(
                f"{label}: {len(names)} above {copies[label]['shown_threshold']:.4f}"
                + (f" ({', '.join(names[:5])}{'...' if len(names) > 5 else ''})" if names else "")
                + (f", {len(between[label])} between {copies[label]['confirm_threshold']:.4f} and it"
                   if between[label] else "")
                for label, names in found.items()))
        check.plan = self._plan_confirmed(CohortSizes.of(ctx), len(found))
        return check

    @classmethod
    def _plan_confirmed(cls, sizes: CohortSizes, parts: int | None = None) -> dict:
        """Each confirming part passes an honest cohort with `confirm_pass_probability` (the rule's normal null
        model at these sizes; about 0.998 at 100 / 100), and all of them with at least 1 - the sum of the parts'
        failure chances (union bound: the parts see the same patients). `parts`: those the default options run,
        when not given."""
        if parts is None:
            defaults = {o.name: o.default for o in cls.options}
            # robust, smoothed and warped, each also by its best slice; patches; the masks as they are and centred
            views = 1 + int(defaults["copy_smoothing_px"] > 0) + int(defaults["copy_warp"])
            parts = (views * (1 + int(defaults["copy_best_slice"])) + int(defaults["copy_patches"])
                     + len(MASK_FORMS) * int(defaults["audit_masks"]))
        each = confirm_pass_probability(int(sizes.synthetic), int(sizes.holdout), CONFIRM_ALPHA, 1.0 - TAU_ALPHA)
        return {"honest_pass_probability": max(0.0, 1.0 - parts * (1.0 - each)), "smallest_detectable": 1,
                "detectable_unit": f"copied patients (one confirmed copy fails; {parts} confirming parts)"}

    def _closer_check(self, ctx, closer: dict, n_syn: int):
        label, estimate, lower, upper = worst_case(
            [(label, c["share"], c["lower"], c["upper"]) for label, c in closer.items()], "<=")
        threshold = ctx.threshold("privacy.closer_to_train_share",
                                  self.default_thresholds["privacy.closer_to_train_share"][0])
        need = patients_to_decide(estimate, threshold, 1.0 - CLOSER_ALPHA)
        decide = (f"about {need} synthetic patients at this share would decide it" if need else
                  "the share sits on the threshold: a much larger cohort is needed")
        return self.check(ctx, "privacy.closer_to_train_share", estimate, lower, upper, 1.0 - CLOSER_ALPHA,
                          decide=decide, plan=self._plan_closer(CohortSizes.of(ctx), threshold),
                          details=f"worst part {label}; " + "; ".join(
                              f"{k}: {c['closer_patients']:.1f}/{n_syn} [{c['lower']:.3f}, {c['upper']:.3f}], "
                              f"{c['balancing']}" for k, c in closer.items()))

    @staticmethod
    def _plan_near(sizes: CohortSizes, threshold: float) -> dict:
        return plan_flag_rate(sizes, threshold, "share of synthetic patients that copy a training patient (per part)")

    @staticmethod
    def _plan_closer(sizes: CohortSizes, threshold: float) -> dict:
        return {"honest_pass_probability": pass_probability(sizes.synthetic, 0.5, threshold, 1.0 - CLOSER_ALPHA),
                "smallest_detectable": smallest_detectable(sizes.synthetic, 0.5, threshold, 1.0 - CLOSER_ALPHA),
                "detectable_unit": "share of synthetic patients that copy a training patient (per part)"}

    def plan(self, sizes: CohortSizes, thresholds: dict[str, float], seed: int = 0) -> dict:
        t = {name: float(thresholds.get(name, default)) for name, (default, _, _) in self.default_thresholds.items()}
        return {"privacy.near_copy_rate": self._plan_near(sizes, t["privacy.near_copy_rate"]),
                "privacy.confirmed_copies": self._plan_confirmed(sizes),
                "privacy.closer_to_train_share": self._plan_closer(sizes, t["privacy.closer_to_train_share"])}
