"""Membership inference, scored per patient: can an attacker tell training patients from holdout patients?

Members are the training patients, non-members the holdout patients; every attack scores slices (higher = more
member-like), aggregated per patient by the mean and by the maximum over its slices (one memorised slice is
enough to single a patient out). Black-box attacks see only the synthetic cohort (plus real reference data), in
each feature space:

- `gan_leaks`: minus the distance to the closest synthetic slice (Chen et al., GAN-Leaks; the DCR attack).
- `gan_leaks_calibrated`: the same minus the distance to the closest real holdout slice of another patient
  (a query is never its own reference; member queries also leave one random holdout patient out, so both
  classes are calibrated against references of the same size).
- `monte_carlo`: the share of synthetic slices within the median closest distance (Hilprecht et al. 2019).
- `domias`: log density ratio p_synthetic(x) / p_reference(x), Gaussian KDEs on PCA-whitened features
  (van Breugel et al. 2023), with the same leave-one-patient-out reference.

White-box (`ctx.generator` set): the generator's own `membership_scores`, raw and difficulty-calibrated against
reference generators trained on holdout patients (offline LiRA, auditors.privacy.lira).

The attack that is gated is chosen on patients other than those it is scored on (cross-fitted halves, flipped
below AUC 0.5, auditors.privacy.mia_stats); the checks carry two-sided intervals, the worst kept attack decides,
and the planning figures of auditors.privacy.mia_plan stand beside each check.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.metrics import roc_curve

from auditors.base import (AuditContext, AuditResult, Auditor, CohortSizes, Figure, Option, register_auditor,
                           worst_case)
from auditors.features import features

from . import mia_plan
from .dp_consistency import dp_consistency_check, model_delta
from .lira import reference_recipe, train_references, white_box
from .memorisation import feature_spaces
from .mia_stats import (ALPHA, Candidate, KeptAttack, auc_parts, cross_fit, epsilon_summary, halves,
                        low_fpr_supported, rank_auc, tpr_parts)
from .neighbours import cosine_distance_to_euclidean, euclidean_to_similarity, index_for
from .patients import first_other_patient, max_slices_per_patient, per_patient

BLACK_BOX = ("gan_leaks", "gan_leaks_calibrated", "monte_carlo", "domias")
AGGREGATES = ("mean", "max")  # per patient, over its slices


def patient_halves(seed: int, n_train: int, n_holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """The cross-fitting halves of the training and the holdout patients (mia_stats.halves), drawn from the audit's
    seed: the attack selection, the white-box scores and the LiRA references all cut along them."""
    rng = np.random.default_rng(seed + 1)
    return halves(n_train, rng), halves(n_holdout, rng)


# --------------------------------------------------------------------------------------------------------------
# Attacks: per-slice scores for the query slices (train first, then holdout); higher = more member-like


@dataclass
class Queries:
    """Train and holdout slices as one query set, with patient codes and each query's excluded reference patient."""

    train_codes: np.ndarray
    holdout_codes: np.ndarray
    n_train: int  # patients
    n_holdout: int
    excluded: np.ndarray  # per query slice: the holdout patient its reference leaves out

    @classmethod
    def build(cls, ctx: AuditContext) -> "Queries":
        tr_codes, tr_patients = ctx.train.subject_codes()
        ho_codes, ho_patients = ctx.holdout.subject_codes()
        if len(ho_patients) < 2:
            raise ValueError("membership inference needs at least 2 holdout patients (a reference that leaves one out)")
        rng = np.random.default_rng(ctx.seed)
        left_out = rng.integers(0, len(ho_patients), len(tr_patients))  # one per training patient, all its slices
        return cls(tr_codes, ho_codes, len(tr_patients), len(ho_patients), np.r_[left_out[tr_codes], ho_codes])

    @property
    def patient_codes(self) -> np.ndarray:
        return np.r_[self.train_codes, self.holdout_codes + self.n_train]

    def split(self, slice_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-patient mean scores: (members, non-members)."""
        patients = per_patient(slice_scores, self.patient_codes, self.n_train + self.n_holdout, "mean")
        return patients[:self.n_train], patients[self.n_train:]


def black_box_scores(ctx: AuditContext, space: str, queries: Queries) -> dict[str, np.ndarray]:
    q = np.concatenate([features(ctx, space, "train"), features(ctx, space, "holdout")])
    synthetic = index_for(ctx, space, "synthetic")
    d_syn = cosine_distance_to_euclidean(synthetic.search(q, 1)[0][:, 0])

    # Reference distance: nearest real holdout slice of a patient other than the query's excluded one.
    holdout = index_for(ctx, space, "holdout")
    k = min(holdout.ntotal, max_slices_per_patient(queries.holdout_codes) + 1)
    sim_ref, id_ref = holdout.search(q, k)
    col = first_other_patient(id_ref, queries.holdout_codes, queries.excluded)
    if (col < 0).any():
        raise ValueError("a query found no reference slice outside its excluded patient")
    d_ref = cosine_distance_to_euclidean(sim_ref[np.arange(len(q)), col])

    # Hilprecht's Monte Carlo estimate: synthetic mass within the median closest distance.
    radius = float(np.median(d_syn))
    within = synthetic.count_within(q, euclidean_to_similarity(radius))

    return {"gan_leaks": -d_syn, "gan_leaks_calibrated": d_ref - d_syn,
            "monte_carlo": within / synthetic.ntotal,
            "domias": domias_scores(ctx, space, q, queries)}


def domias_scores(ctx: AuditContext, space: str, q: np.ndarray, queries: Queries) -> np.ndarray:
    """log p_synthetic(x) - log p_reference(x): KDEs on PCA-whitened features; the reference KDE of each query
    leaves out the query's excluded holdout patient."""
    synthetic = features(ctx, space, "synthetic")
    holdout = features(ctx, space, "holdout")
    rng = np.random.default_rng(ctx.seed)
    max_points = ctx.option("domias_max_points")
    if len(synthetic) > max_points:  # a density estimate does not need every slice; keeps the KDE's cost bounded
        synthetic = synthetic[rng.choice(len(synthetic), max_points, replace=False)]
    smallest_reference = len(holdout) - max_slices_per_patient(queries.holdout_codes)
    components = int(min(ctx.option("domias_components"), synthetic.shape[1],
                         len(synthetic) - 2, smallest_reference - 2))
    if components < 1:
        raise ValueError("DOMIAS needs more synthetic and holdout slices than that")
    pca = PCA(n_components=components, whiten=True, random_state=ctx.seed).fit(synthetic)
    qp, hp = pca.transform(q).T, pca.transform(holdout).T
    log_synthetic = stats.gaussian_kde(pca.transform(synthetic).T).logpdf(qp)
    log_reference = np.empty(len(q))
    for patient in range(queries.n_holdout):
        rows = np.flatnonzero(queries.excluded == patient)
        if len(rows):
            kde = stats.gaussian_kde(hp[:, queries.holdout_codes != patient])
            log_reference[rows] = kde.logpdf(qp[:, rows])
    return log_synthetic - log_reference


def candidates_from(slice_scores: dict[str, tuple[np.ndarray, np.ndarray]], queries: Queries) -> list[Candidate]:
    """Per attack label: per-slice (train, holdout) scores -> one candidate per patient aggregate."""
    out = []
    for label, (train, holdout) in slice_scores.items():
        for how in AGGREGATES:
            members = per_patient(train, queries.train_codes, queries.n_train, how)
            nonmembers = per_patient(holdout, queries.holdout_codes, queries.n_holdout, how)
            out.append(Candidate(f"{label} ({how})", members, nonmembers))
    return out


def roc_figure(kept: KeptAttack) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(5.5, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for half, (m, n) in enumerate(kept.scores):
        fpr, tpr, _ = roc_curve(np.r_[np.ones(len(m)), np.zeros(len(n))], np.r_[m, n])
        ax.plot(fpr, tpr, lw=1.2, label=f"half {half}: {kept.chosen[half]} (AUC {kept.half_aucs[half]:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate (holdout patients)")
    ax.set_ylabel("true positive rate (training patients)")
    ax.legend(fontsize=7, loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return Figure(name="mia_roc", title="Membership inference ROC, the gated attack on held-out patients",
                  png=buf.getvalue(), public=True,
                  caption="Each half's curve is the attack chosen on the other half; the diagonal is guessing.")


def decide_text(sizes: CohortSizes, threshold: float, keep: int) -> str:
    """What cohort would decide an inconclusive AUC check (an honest generator passing with 95% probability)."""
    holdout = mia_plan.holdout_needed(sizes.train, threshold, keep)
    if holdout is not None and holdout > sizes.holdout:
        return f"a holdout of {holdout} patients (beside these {sizes.train} training patients) would decide it"
    both = mia_plan.equal_sizes_needed(threshold, keep)
    return (f"about {both} training and {both} holdout patients would decide it" if both
            else "no cohort size decides it at this threshold")


@register_auditor
class MembershipInference(Auditor):
    name = "membership_inference"
    options = (
        Option("mia_bootstrap", int, 2000, "patient resamples for the variance of each half's attack AUC",
               low=50, high=1000000),
        Option("white_box", bool, True, "also attack the generator with its own membership scores when given one"),
        Option("domias_max_points", int, 10000, "slices the DOMIAS density models are fitted on at most", low=10),
        Option("domias_components", int, 10, "PCA components of the DOMIAS density models", low=1, high=512),
        Option("mia_attacks_kept", int, 1, "attacks chosen on one half and gated on the other (worst counts)",
               low=1, high=64),
        Option("mia_low_fpr", float, 0.05, "false-positive rate of privacy.mia_tpr_at_low_fpr (gated only with at "
               "least 5/FPR holdout patients)", low=1e-6, high=0.5),
        Option("mia_reference_models", int, 1, "reference generators per holdout half for the calibrated white-box "
               "attack (offline LiRA); 0 turns it off", low=0, high=64),
        Option("mia_reference_epochs", float, 0.0, "epochs each reference generator trains (0: the audited "
               "generator's, from its model card)", low=0.0),
    )
    group = "privacy"
    default_thresholds = {
        "privacy.mia_auc": (
            0.70, "<=",
            "membership-inference AUC of the attack chosen on other patients (cross-fitted halves), training vs "
            "holdout patients; guessing gives 0.5. Pass: its upper bound (95%, patient bootstrap) is inside"),
        "privacy.mia_tpr_at_low_fpr": (
            0.25, "<=",
            "true-positive rate of the chosen attack at a low false-positive rate (option mia_low_fpr, 5% by "
            "default; guessing gives the FPR itself), Clopper-Pearson over patients"),
    }

    def run(self, ctx: AuditContext) -> AuditResult:
        queries = Queries.build(ctx)
        member_half, nonmember_half = patient_halves(ctx.seed, queries.n_train, queries.n_holdout)
        notes = []
        raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for space in feature_spaces(ctx):
            for attack, scores in black_box_scores(ctx, space, queries).items():
                raw[f"{attack}/{space}"] = (scores[:len(ctx.train)], scores[len(ctx.train):])
        if ctx.generator is not None and ctx.option("white_box"):
            references = None
            if ctx.option("mia_reference_models") > 0:
                recipe = reference_recipe(ctx)
                if isinstance(recipe, str):
                    notes.append(f"calibrated white-box attack (LiRA) not run: {recipe}")
                else:
                    references = train_references(ctx, nonmember_half, recipe)
            raw.update(white_box(ctx, member_half, nonmember_half, references))
        candidates = candidates_from(raw, queries)
        keep = ctx.option("mia_attacks_kept")
        kept = cross_fit(candidates, member_half, nonmember_half, keep, ctx.option("mia_bootstrap"), ctx.seed)
        sizes = CohortSizes.of(ctx)
        thresholds = {name: ctx.threshold(name, default) for name, (default, _, _) in self.default_thresholds.items()}
        plan = self.plan(sizes, thresholds, ctx.seed, keep=keep, fpr=ctx.option("mia_low_fpr"))
        result = AuditResult(auditor=self.name, group=self.group)

        parts = auc_parts(kept)
        label, auc, lower, upper = worst_case(parts, "<=")
        named = dict(p[:2] for p in parts)[label]  # the deciding attack's own AUC (`auc` is the worst of all)
        top = kept[0]
        result.checks.append(self.check(
            ctx, "privacy.mia_auc", auc, lower, upper, 1 - ALPHA,
            details=f"{label}: AUC {named:.3f} on held-out halves (halves {top.half_aucs[0]:.3f}, "
                    f"{top.half_aucs[1]:.3f}), interval [{lower:.3f}, {upper:.3f}] (upper at 95%, lower at "
                    f"{1 - ALPHA / len(kept):.4g}); chosen among {len(candidates)} candidate attacks; "
                    f"{queries.n_train} training vs {queries.n_holdout} holdout patients",
            decide=decide_text(sizes, thresholds["privacy.mia_auc"], len(kept)), plan=plan["privacy.mia_auc"]))

        fpr = ctx.option("mia_low_fpr")
        delta = model_delta(ctx.model_card)
        eps = epsilon_summary(top, fpr, delta)
        parts = tpr_parts(kept, fpr)
        label, tpr, lower, upper = worst_case(parts, "<=")
        named = dict(p[:2] for p in parts)[label]
        op = eps["operating_point"]
        need = int(np.ceil(5 / fpr - 1e-9))
        supported = low_fpr_supported(queries.n_holdout, fpr)
        if not supported:
            # Fail closed: a check the cohort cannot estimate is never dropped from the gate. With so few non-members
            # the threshold's true FPR is unknown (one non-member: uniform on [0, 1]), so the TPR bounds neither
            # show safety nor a leak at this FPR: [0, 1], inconclusive (the AUC check can still show a leak).
            lower, upper = 0.0, 1.0
            notes.append(f"privacy.mia_tpr_at_low_fpr cannot be decided on this cohort: an FPR of {fpr:g} needs at "
                         f"least {need} holdout patients, this holdout has {queries.n_holdout} (inconclusive)")
        result.checks.append(self.check(
            ctx, "privacy.mia_tpr_at_low_fpr", tpr, lower, upper, 1 - ALPHA,
            details=f"{label}: TPR {named:.3f} at FPR {op['fp'] / op['nonmembers']:.3f} (target {fpr:g}; "
                    f"guessing gives the FPR); empirical epsilon >= {eps['epsilon_lower_bound']:.3f} at delta "
                    f"{delta:g} (the most this cohort can show: {eps['largest_showable_epsilon']:.3f})"
                    + ("" if supported else f"; {queries.n_holdout} holdout patients cannot observe this FPR"),
            decide=f"a holdout of {need}+ patients supports this FPR; more training patients "
                   "narrow the TPR interval", plan=plan["privacy.mia_tpr_at_low_fpr"]))
        dp = dp_consistency_check(ctx.model_card, eps, top.label)
        if dp is not None:
            result.checks.append(dp)
        result.metrics = {
            "gated_attacks": [{"rank": a.rank, "label": a.label, "auc": a.auc, "se": a.se,
                               "half_aucs": list(a.half_aucs)} for a in kept],
            "candidate_auc_in_sample": {c.label: float(rank_auc(c.members, c.nonmembers)) for c in candidates},
            "members": queries.n_train, "nonmembers": queries.n_holdout, "delta": delta, "low_fpr": fpr,
            **{k: v for k, v in eps.items() if k != "operating_point"}, "notes": notes,
        }
        result.figures.append(roc_figure(top))
        return result

    def plan(self, sizes: CohortSizes, thresholds: dict[str, float], seed: int = 0, keep: int | None = None,
             fpr: float | None = None) -> dict[str, dict]:
        keep = keep or self._option_default("mia_attacks_kept")
        fpr = fpr or self._option_default("mia_low_fpr")
        t = {name: float(thresholds.get(name, default)) for name, (default, _, _) in self.default_thresholds.items()}
        return {"privacy.mia_auc": mia_plan.plan_auc(sizes.train, sizes.holdout, t["privacy.mia_auc"], keep),
                "privacy.mia_tpr_at_low_fpr": mia_plan.plan_tpr(sizes.train, sizes.holdout,
                                                                t["privacy.mia_tpr_at_low_fpr"], fpr, keep)}

    def _option_default(self, name: str):
        return next(o.default for o in self.options if o.name == name)
