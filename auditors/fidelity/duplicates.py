"""Duplicates: does the synthetic cohort repeat its own patients more than real patients resemble each other?

A generator that collapsed onto a few dozen patients (each drawn twice or more) keeps real-looking texture and
most of the population's spread: diversity and coverage barely move, and what else blocks it does so by accident
(measured 2026-12-04 in memory: fresh phantom patients collapsed to 20 or 50 were blocked only by inconclusive FD
checks; through the CLI the discriminator fails a 50-patient collapse, 0.81, because a repeated patient sits in
both of its folds). Here each synthetic patient is matched to the OTHER synthetic patients with the privacy group's
robust search (`robust_match`: the best Pearson correlation over shifts of up to 3 px; a generator's repeats need
not be turned or flipped to be found), its score the median over its slices of the best match; real new patients
matched among themselves (holdout against holdout) are the null. A synthetic patient is a duplicate when it scores
above the null's 99% quantile, and the check is the share of such patients with the bounds of `near_copies` (tau's
confidence bounds and Clopper-Pearson): the three verdicts, as for the privacy group's near-copy rate.

The best of more candidates is higher: both sets are matched within groups of the same number of patients (the
smaller of the two cohorts), so that a synthetic patient has as many chances to find a twin as a real one had.
With more synthetic than holdout patients a twin in another group is not seen, so the rate counts twins among
that many patients: a lower bound of the duplication, never an inflated one.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from auditors.base import AuditContext, AuditResult, Auditor, CohortSizes, register_auditor
from auditors.privacy.calibration import patient_folds
from auditors.privacy.memorisation import (FIGURE_PATIENTS, MATCH_SIZE, MIN_CALIBRATION_PATIENTS, RATE_ALPHA,
                                           TAU_ALPHA, Part, flag_rate_decide, matches_figure, near_copies,
                                           plan_flag_rate)
from auditors.privacy.robust_match import robust_similarity, within_set_candidates

CHECK = "fidelity.duplicate_patient_rate"


def group_patients(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """n patients in random groups of about `size` (at least 2 each, when n allows)."""
    groups = max(1, min(round(n / max(size, 1)), n // 2))
    return [np.sort(g) for g in np.array_split(rng.permutation(n), groups)]


def twin_scores(images: np.ndarray, codes: np.ndarray, size: int, rng: np.random.Generator, max_shift: int = 3
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per patient the median over its slices of the best robust correlation to a slice of another patient of
    its group (NaN for a patient alone); per slice that best correlation and the index of the slice matched."""
    codes = np.asarray(codes, dtype=np.int64)
    n = int(codes.max()) + 1 if len(codes) else 0
    per_patient = np.full(n, np.nan)
    slice_best, slice_match = np.full(len(codes), np.nan), np.full(len(codes), -1, dtype=np.int64)
    for group in group_patients(n, size, rng):
        if len(group) < 2:
            continue
        rows = np.flatnonzero(np.isin(codes, group))
        local = np.searchsorted(group, codes[rows])
        cand = within_set_candidates(images[rows], local, size=MATCH_SIZE)
        best, match = robust_similarity(images[rows], images[rows], cand, size=MATCH_SIZE, max_shift=max_shift,
                                        rotations=(0.0,), flips=("none",))
        slice_best[rows], slice_match[rows] = best, rows[match]
        for j, patient in enumerate(group):
            per_patient[patient] = float(np.median(best[local == j]))
    return per_patient, slice_best, slice_match


@register_auditor
class DuplicatesAuditor(Auditor):
    name = "duplicates"
    group = "fidelity"
    default_thresholds = {
        CHECK: (0.2, "<=", "share of synthetic patients more similar to another synthetic patient than 99% of real "
                           "new patients are to each other (best correlation over shifts of up to 3 px): "
                           "a generator that repeats its patients"),
    }

    def plan(self, sizes: CohortSizes, thresholds, seed: int = 0) -> dict:
        group = min(sizes.synthetic, sizes.holdout)
        return {CHECK: plan_flag_rate(CohortSizes(sizes.train, group, sizes.synthetic, sizes.test),
                                      float(thresholds.get(CHECK, self.default_thresholds[CHECK][0])),
                                      "share of synthetic patients that repeat another synthetic patient")}

    def run(self, ctx: AuditContext) -> AuditResult:
        n_syn, n_hold = len(ctx.synthetic.subjects), len(ctx.holdout.subjects)
        size = min(n_syn, n_hold)
        rng = np.random.default_rng([ctx.seed, 21])
        scores = {}
        for split in ("synthetic", "holdout"):
            data = getattr(ctx, split)
            scores[split] = twin_scores(data.images, data.subject_codes()[0], size, rng)
        (syn, syn_best, syn_match), (hold, _, _) = scores["synthetic"], scores["holdout"]
        part = Part("duplicates", syn, hold, syn_best, syn_match)
        found = near_copies(part, n_syn, patient_folds(n_hold, ctx.seed))
        flagged = [int(i) for i in np.flatnonzero(np.where(np.isfinite(syn), syn, -np.inf) > found["tau"])]
        threshold = ctx.threshold(CHECK, self.default_thresholds[CHECK][0])
        names = [ctx.synthetic.subjects[i] for i in flagged]
        check = self.check(
            ctx, CHECK, found["near_copy_rate"], found["lower"], found["upper"], 1.0 - TAU_ALPHA - RATE_ALPHA,
            decide=flag_rate_decide(found, threshold), plan=self.plan(CohortSizes.of(ctx), {CHECK: threshold})[CHECK],
            details=(f"{found['near_copies']} of {n_syn} synthetic patients above tau {found['tau']:.4f} (bounds "
                     f"at {found['tau_high']:.4f} and {found['tau_low']:.4f}), matched in groups of {size} patients; "
                     f"real new patients among themselves: median {found.get('holdout_median_score', np.nan):.4f}, "
                     f"cross-fitted rate {found['baseline_rate']:.3f}"
                     + (f"; e.g. {', '.join(names[:5])}{'...' if len(names) > 5 else ''}" if names else "")))
        result = AuditResult(self.name, self.group, metrics={
            "duplicates": {k: v for k, v in found.items() if k != "confirmed"}, "flagged": names,
            "group_size": size, "calibration_patients": n_hold,
            "minimum_calibration_patients": MIN_CALIBRATION_PATIENTS}, checks=[check])
        if flagged:
            order = [int(i) for i in np.argsort(-np.where(np.isfinite(syn), syn, -np.inf), kind="stable")
                     [:min(len(flagged), FIGURE_PATIENTS)]]
            figure = matches_figure(ctx, part, order, "synthetic patients beside their synthetic twins",
                                    reference="synthetic")
            result.figures.append(replace(figure, name="duplicates", public=True, caption=(
                "Per synthetic patient flagged as a duplicate, its slices (upper row, with the robust correlation) "
                "above the slices of the other synthetic patient they match best (lower row).")))
        return result
