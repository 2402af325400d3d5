"""Stacks: are the synthetic patients' stacks ordered and continuous like real short-axis stacks?

Every other fidelity check looks at slices one by one, or at whole-volume sums (clinical indices): a generator
that writes a patient's slices apex first, shuffles them, draws each slice's label map on its own, or assembles a
patient from slices of different patients passes them all (measured 2026-12-05: fresh phantom patients with their
stacks reversed passed every other fidelity check). A reviewer scrolling through a stack sees it at once: from the
base (large LV, the RV wide beside it) to the apex (small LV, the RV gone), one body from slice to slice.

Two per-patient scores, each a similarity (higher is more typical):
- `profile`: per phase (ED and ES), each structure's area (LV cavity, myocardium, RV cavity) per annotated slice,
  divided by its largest area in that phase, in the order of `slice_pos` (0 = base), read at `GRID` evenly spaced
  positions by linear interpolation: one 6 x GRID profile, correlated (Pearson) with the training patients' mean
  profile;
- `coherence`: the median, over the neighbouring pairs of slices of each phase (in `slice_pos` order), of the
  Pearson correlation of their images: the body, the organs and the heart continue from one slice to the next.
Real new patients (holdout) give each score's null. A synthetic patient is atypical when it scores lower than 99%
of real new patients do, and each check is the share of atypical patients with the bounds of the privacy group's
near-copy rate (tau's confidence bounds and Clopper-Pearson; `memorisation.near_copies`, fed the negated score so
that its upper tail is this one's lower tail): pass, fail or inconclusive. A synthetic patient without a score
(too few slices) counts as atypical: fail closed.
"""
from __future__ import annotations

import io

import numpy as np

from auditors.base import AuditContext, AuditResult, Auditor, CohortSizes, Figure, register_auditor
from auditors.privacy.calibration import patient_folds
from auditors.privacy.memorisation import (MIN_CALIBRATION_PATIENTS, RATE_ALPHA, TAU_ALPHA, Part, near_copies,
                                           flag_rate_decide, plan_flag_rate)
from cmri_release.core.labels import LV, MYO, RV
from cmri_release.core.sliceset import SliceSet

PROFILE_CHECK = "fidelity.atypical_stack_rate"
COHERENCE_CHECK = "fidelity.incoherent_stack_rate"
GRID = 8  # positions from base to apex at which each profile is read
STRUCTURES = ((LV, "LV"), (MYO, "MYO"), (RV, "RV"))
PHASES = ("ED", "ES")
FIGURE_PATIENTS = 4
SHOWN_SLICES = 8


def stack_profiles(slices: SliceSet, grid: int = GRID) -> np.ndarray:
    """(patients, phases x structures x grid) area profiles, base to apex, in `subject_codes` order; NaN rows for
    patients without two annotated slices that show the heart in each phase. Positions run from the first such
    slice (0) to the last (1) of each phase, whatever the stack held beyond them."""
    codes, subjects = slices.subject_codes()
    at = np.linspace(0.0, 1.0, grid)
    flat = slices.labels.reshape(len(slices.labels), -1)
    areas = np.stack([np.count_nonzero(flat == s, axis=1) for s, _ in STRUCTURES], axis=1).astype(np.float64)
    # Only slices that show a structure: a reader drops empty ones (cmri_release.preprocess), a generator may not.
    shows_heart = slices.has_label & (areas.sum(axis=1) > 0)
    out = np.full((len(subjects), len(PHASES) * len(STRUCTURES) * grid), np.nan)
    for patient in range(len(subjects)):
        curves = []
        for phase in PHASES:
            rows = np.flatnonzero((codes == patient) & (slices.phases == phase) & shows_heart)
            if len(rows) < 2:
                break
            rows = rows[np.lexsort((slices.slice_index[rows], slices.slice_pos[rows]))]
            pos = slices.slice_pos[rows].astype(np.float64)
            if pos[-1] <= pos[0]:
                break  # every slice at one position: no order to read
            pos = (pos - pos[0]) / (pos[-1] - pos[0])  # the first and last slices that show the heart, as read
            for j in range(len(STRUCTURES)):
                area = areas[rows, j]
                curves.append(np.interp(at, pos, area / max(area.max(), 1.0)))
        if len(curves) == len(PHASES) * len(STRUCTURES):
            out[patient] = np.concatenate(curves)
    return out


def profile_correlation(profiles: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pearson correlation of each profile (row) with the reference profile; NaN rows stay NaN, and a flat profile
    (no order at all) scores -1, the least typical."""
    centred = profiles - profiles.mean(axis=1, keepdims=True)
    ref = reference - reference.mean()
    own = np.linalg.norm(centred, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = centred @ ref / (own * np.linalg.norm(ref))
    return np.where(own <= 1e-12, -1.0, corr)


def stack_coherence(slices: SliceSet) -> np.ndarray:
    """(patients,) per patient in `subject_codes` order: the median over neighbouring slices of each phase (by
    `slice_pos`) of the Pearson correlation of their images; NaN for a patient with no phase of two slices."""
    codes, subjects = slices.subject_codes()
    out = np.full(len(subjects), np.nan)
    for patient in range(len(subjects)):
        pairs = []
        for phase in PHASES:
            rows = np.flatnonzero((codes == patient) & (slices.phases == phase))
            if len(rows) < 2:
                continue
            rows = rows[np.lexsort((slices.slice_index[rows], slices.slice_pos[rows]))]
            flat = slices.images[rows].reshape(len(rows), -1).astype(np.float64)  # one stack at a time
            flat -= flat.mean(axis=1, keepdims=True)
            norms = np.linalg.norm(flat, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                pairs.append(np.einsum("ij,ij->i", flat[:-1], flat[1:]) / (norms[:-1] * norms[1:]))
        if pairs:
            values = np.concatenate(pairs)
            out[patient] = float(np.median(np.where(np.isfinite(values), values, -1.0)))  # a blank slice: no match
    return out


def _median(values: np.ndarray) -> float:
    return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")


def _profile_figure(profiles: np.ndarray, reference: np.ndarray, names: list[str], scores: np.ndarray) -> Figure:
    """Each listed synthetic patient's profiles (solid) over the training patients' mean profile (dashed)."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(2.4 * len(PHASES) * len(STRUCTURES), 1.9 * len(names)), dpi=80)
    at = np.linspace(0.0, 1.0, GRID)
    panels = [(p, s) for p in PHASES for _, s in STRUCTURES]
    for r, (row, name, score) in enumerate(zip(profiles, names, scores)):
        for c, (phase, structure) in enumerate(panels):
            ax = fig.add_subplot(len(names), len(panels), r * len(panels) + c + 1)
            ax.plot(at, reference[c * GRID:(c + 1) * GRID], "--", color="grey", label="train mean")
            ax.plot(at, row[c * GRID:(c + 1) * GRID], "-", color="C3", label=name)
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{name} {phase} {structure}" + (f" (r={score:.2f})" if c == 0 else ""), fontsize=7)
            ax.tick_params(labelsize=6)
            if r == len(names) - 1:
                ax.set_xlabel("base -> apex", fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Figure("atypical_stacks", "synthetic patients whose stacks are least like real ones", buf.getvalue(), True,
                  caption=("Per flagged synthetic patient, each structure's area from base to apex as a share of its "
                           "largest (solid), over the mean of the training patients' profiles (dashed, an aggregate "
                           "of all of them)."))


def _stack_figure(ctx: AuditContext, order: list[int], scores: np.ndarray) -> Figure:
    """Each listed synthetic patient's ED stack, base to apex (synthetic only: a public figure)."""
    from matplotlib.figure import Figure as MplFigure

    codes, subjects = ctx.synthetic.subject_codes()
    fig = MplFigure(figsize=(1.2 * SHOWN_SLICES, 1.4 * len(order)), dpi=80)
    for r, patient in enumerate(order):
        rows = np.flatnonzero((codes == patient) & (ctx.synthetic.phases == PHASES[0]))
        rows = rows[np.lexsort((ctx.synthetic.slice_index[rows], ctx.synthetic.slice_pos[rows]))][:SHOWN_SLICES]
        for c, row in enumerate(rows):
            ax = fig.add_subplot(len(order), SHOWN_SLICES, r * SHOWN_SLICES + c + 1)
            ax.imshow(ctx.synthetic.images[row], cmap="gray")
            ax.set_axis_off()
            if c == 0:
                ax.set_title(f"{subjects[patient]} (r={scores[patient]:.2f})", fontsize=7, loc="left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Figure("incoherent_stacks", "synthetic stacks least continuous from slice to slice", buf.getvalue(), True,
                  caption=("Per flagged synthetic patient, its ED slices from base (left) to apex; r is the median "
                           "correlation of neighbouring slices."))


@register_auditor
class StacksAuditor(Auditor):
    name = "stacks"
    group = "fidelity"
    default_thresholds = {
        PROFILE_CHECK: (0.2, "<=", "share of synthetic patients whose base-to-apex area profiles (LV, MYO, RV at ED "
                                   "and ES) correlate with the training mean profile less than 99% of real new "
                                   "patients' do: stacks reversed, shuffled or drawn slice by slice"),
        COHERENCE_CHECK: (0.2, "<=", "share of synthetic patients whose neighbouring slices correlate less than 99% "
                                     "of real new patients' do: stacks assembled or generated slice by slice"),
    }
    units = {PROFILE_CHECK: "share of synthetic patients with an atypical base-to-apex profile",
             COHERENCE_CHECK: "share of synthetic patients whose stack breaks from slice to slice"}

    def plan(self, sizes: CohortSizes, thresholds, seed: int = 0) -> dict:
        return {name: plan_flag_rate(sizes, float(thresholds.get(name, default)), self.units[name])
                for name, (default, _, _) in self.default_thresholds.items()}

    def _rate(self, ctx: AuditContext, name: str, synthetic: np.ndarray, holdout: np.ndarray, what: str):
        """The check of one score (similarities, higher is more typical), its metrics and the flagged patients."""
        n_syn = len(synthetic)
        threshold = ctx.threshold(name, self.default_thresholds[name][0])
        syn_score = np.where(np.isfinite(synthetic), -synthetic, 1.0)  # no score: atypical (fail closed)
        found = near_copies(Part(name, syn_score, -holdout, syn_score, np.full(n_syn, -1)), n_syn,
                            patient_folds(len(holdout), ctx.seed))
        flagged = [] if "not_calibrated" in found else [int(i) for i in np.flatnonzero(syn_score > found["tau"])]
        names = [ctx.synthetic.subjects[i] for i in flagged]
        unscored = [ctx.synthetic.subjects[i] for i in np.flatnonzero(~np.isfinite(synthetic))]
        bar = -found["tau"] if np.isfinite(found["tau"]) else float("nan")
        check = self.check(
            ctx, name, found["near_copy_rate"], found["lower"], found["upper"], 1.0 - TAU_ALPHA - RATE_ALPHA,
            decide=flag_rate_decide(found, threshold), plan=self.plan(CohortSizes.of(ctx), {name: threshold})[name],
            details=(f"{found['near_copies']} of {n_syn} synthetic patients with {what} below {bar:.4f} (the 1% "
                     f"quantile of real new patients; bounds at {-found['tau_low']:.4f} and {-found['tau_high']:.4f});"
                     f" median synthetic {_median(synthetic):.4f}, real new patients {_median(holdout):.4f}"
                     + (f"; {len(unscored)} synthetic patient(s) without a score, counted atypical" if unscored else "")
                     + (f"; e.g. {', '.join(names[:5])}{'...' if len(names) > 5 else ''}" if names else "")))
        metrics = {"rate": {k: v for k, v in found.items() if k != "confirmed"}, "flagged": names,
                   "unscored": unscored, "calibration_patients": int(np.isfinite(holdout).sum()),
                   "minimum_calibration_patients": MIN_CALIBRATION_PATIENTS,
                   "synthetic_median": _median(synthetic), "holdout_median": _median(holdout)}
        return check, metrics, flagged

    def run(self, ctx: AuditContext) -> AuditResult:
        train = stack_profiles(ctx.train)
        scored_train = np.isfinite(train).all(axis=1)
        # no training profile: no reference, so no holdout patient scores and the check cannot calibrate
        reference = train[scored_train].mean(axis=0) if scored_train.any() else np.full(train.shape[1], np.nan)
        synthetic = stack_profiles(ctx.synthetic)
        syn_corr = profile_correlation(synthetic, reference)
        profile, profile_metrics, profile_flags = self._rate(
            ctx, PROFILE_CHECK, syn_corr, profile_correlation(stack_profiles(ctx.holdout), reference),
            "a correlation of their profile with the training mean profile")
        profile_metrics["grid"] = GRID
        curves = reference.reshape(len(PHASES) * len(STRUCTURES), GRID).round(4)
        profile_metrics["train_mean_profile"] = {f"{p}.{s}": curves[i * len(STRUCTURES) + j].tolist()
                                                 for i, p in enumerate(PHASES) for j, (_, s) in enumerate(STRUCTURES)}
        syn_coherence = stack_coherence(ctx.synthetic)
        coherence, coherence_metrics, coherence_flags = self._rate(
            ctx, COHERENCE_CHECK, syn_coherence, stack_coherence(ctx.holdout),
            "a median correlation of neighbouring slices")
        result = AuditResult(self.name, self.group, metrics={"profile": profile_metrics,
                                                             "coherence": coherence_metrics},
                             checks=[profile, coherence])
        shown = [i for i in profile_flags if np.isfinite(synthetic[i]).all()]
        if shown:
            order = sorted(shown, key=lambda i: syn_corr[i])[:FIGURE_PATIENTS]
            result.figures.append(_profile_figure(synthetic[order], reference,
                                                  [ctx.synthetic.subjects[i] for i in order], syn_corr[order]))
        shown = [i for i in coherence_flags if np.isfinite(syn_coherence[i])]
        if shown:
            result.figures.append(_stack_figure(ctx, sorted(shown, key=lambda i: syn_coherence[i])[:FIGURE_PATIENTS],
                                                syn_coherence))
        return result
