"""Membership inference, scored per patient: can an attacker tell training patients from holdout patients?

Members are the training patients, non-members the holdout patients; every attack scores slices
(higher = more member-like) and averages them per patient. Black-box attacks see only the synthetic
cohort (plus real reference data), in each feature space:

- `gan_leaks`: minus the distance to the closest synthetic slice (Chen et al., GAN-Leaks; the DCR attack).
- `gan_leaks_calibrated`: the same minus the distance to the closest real holdout slice of another patient
  (a query is never its own reference; member queries also leave one random holdout patient out, so both
  classes are calibrated against references of the same size).
- `monte_carlo`: the share of synthetic slices within the median closest distance (Hilprecht et al. 2019).
- `domias`: log density ratio p_synthetic(x) / p_reference(x), Gaussian KDEs on PCA-whitened features
  (van Breugel et al. 2023), with the same leave-one-patient-out reference.

White-box (`ctx.generator` set): the generator's own `membership_scores` (loss at several noise levels,
ELBO or discriminator score), averaged per patient.

Each attack yields a summary: AUC (sklearn) with a stratified bootstrap CI over patients, TPR at the
lowest FPR the cohort supports, and the Clopper-Pearson empirical epsilon lower bound at the model's
delta. Every confidence statement is Bonferroni-corrected over the attacks (and, for epsilon, over the
operating points tried), so that the best of many attacks does not look strong by chance.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score, roc_curve

from auditors.base import AuditContext, AuditResult, Auditor, Figure, Option, register_auditor
from auditors.features import features

from .dp_consistency import dp_consistency_check, model_delta
from .memorisation import feature_spaces
from .neighbours import cosine_distance_to_euclidean, euclidean_to_similarity, index_for
from .patients import first_other_patient, max_slices_per_patient, per_patient

ALPHA = 0.05  # family-wise error of every bound, split over attacks (Bonferroni)
FP_SHARES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5)  # operating points tried for the epsilon lower bound
BLACK_BOX = ("gan_leaks", "gan_leaks_calibrated", "monte_carlo", "domias")


# --------------------------------------------------------------------------------------------------------------
# Statistics


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds of a proportion k/n, each holding with probability 1 - alpha."""
    low = 0.0 if k <= 0 else float(stats.beta.ppf(alpha, k, n - k + 1))
    high = 1.0 if k >= n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))
    return low, high


def epsilon_lower_bound(tp: int, n_members: int, fp: int, n_nonmembers: int, delta: float, alpha: float) -> float:
    """Empirical epsilon lower bound of one attack operating point (Jagielski et al. 2020; Nasr et al. 2021).

    (epsilon, delta)-DP implies FPR + e^eps FNR >= 1 - delta and FNR + e^eps FPR >= 1 - delta, hence
    eps >= max(ln((1 - delta - FNR) / FPR), ln((1 - delta - FPR) / FNR)). FPR and FNR are replaced by their
    Clopper-Pearson upper bounds (alpha/2 each, so that both hold together with probability 1 - alpha).
    """
    tpr_low, _ = clopper_pearson(tp, n_members, alpha / 2)
    _, fpr_high = clopper_pearson(fp, n_nonmembers, alpha / 2)
    fnr_high = 1.0 - tpr_low
    bounds = [0.0]
    for numerator, denominator in ((1 - delta - fnr_high, fpr_high), (1 - delta - fpr_high, fnr_high)):
        if numerator > 0 and denominator > 0:
            bounds.append(math.log(numerator / denominator))
    return max(bounds)


def rank_auc(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
    """AUC along the last axis from average ranks (Mann-Whitney U), vectorised over leading axes."""
    n_m, n_n = members.shape[-1], nonmembers.shape[-1]
    ranks = stats.rankdata(np.concatenate([members, nonmembers], axis=-1), axis=-1)
    return (ranks[..., :n_m].sum(axis=-1) - n_m * (n_m + 1) / 2) / (n_m * n_n)


def bootstrap_auc(members: np.ndarray, nonmembers: np.ndarray, n_boot: int, seed: int, chunk: int = 256) -> np.ndarray:
    """AUCs of `n_boot` stratified bootstrap resamples of the patients (members and non-members apart)."""
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        m = members[rng.integers(0, len(members), (b, len(members)))]
        n = nonmembers[rng.integers(0, len(nonmembers), (b, len(nonmembers)))]
        out[start:start + b] = rank_auc(m, n)
    return out


def low_fpr_target(n_nonmembers: int) -> float:
    """1% FPR needs at least 100 non-members to be observable at all; smaller cohorts are judged at 5%."""
    return 0.01 if n_nonmembers >= 100 else 0.05


def operating_point(members: np.ndarray, nonmembers: np.ndarray, fp_allowed: int) -> tuple[float, int, int]:
    """Threshold at the (fp_allowed + 1)-th largest non-member score; 'member' means score > threshold.

    The threshold depends on the non-members only, so the Clopper-Pearson bound on TPR holds as is, and the
    one on FPR equals the distribution-free bound of an order statistic."""
    threshold = float(np.sort(nonmembers)[::-1][fp_allowed])
    return threshold, int((members > threshold).sum()), int((nonmembers > threshold).sum())


@dataclass
class AttackSummary:
    """What one attack achieved against the patients (TAPAS-style summary that the report reads)."""

    attack: str
    space: str | None
    members: np.ndarray  # per-patient scores of members
    nonmembers: np.ndarray
    alpha: float  # this attack's share of the family-wise error
    delta: float
    n_boot: int
    seed: int
    metrics: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.attack if self.space is None else f"{self.attack}/{self.space}"

    def evaluate(self) -> "AttackSummary":
        m, n = np.asarray(self.members, float), np.asarray(self.nonmembers, float)
        if len(m) < 1 or len(n) < 1 or not (np.isfinite(m).all() and np.isfinite(n).all()):
            raise ValueError(f"attack {self.label}: scores must be finite, with at least one member and one non-member")
        y = np.r_[np.ones(len(m)), np.zeros(len(n))]
        auc = float(roc_auc_score(y, np.r_[m, n]))
        boot = bootstrap_auc(m, n, self.n_boot, self.seed)
        target = low_fpr_target(len(n))
        fp_allowed = int(math.floor(target * len(n)))
        _, tp, fp = operating_point(m, n, fp_allowed)
        tpr_low, _ = clopper_pearson(tp, len(m), self.alpha / 2)
        _, fpr_high = clopper_pearson(fp, len(n), self.alpha / 2)
        grid = sorted({min(int(math.floor(s * len(n))), len(n) - 1) for s in FP_SHARES})
        eps = []
        for allowed in grid:
            _, tp_g, fp_g = operating_point(m, n, allowed)
            eps.append(epsilon_lower_bound(tp_g, len(m), fp_g, len(n), self.delta, self.alpha / len(grid)))
        self.metrics = {
            "auc": auc,
            "auc_ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "auc_lower_bound": float(np.quantile(boot, self.alpha)),
            "fpr_target": target, "tpr_at_low_fpr": tp / len(m), "fpr_at_low_fpr": fp / len(n),
            "tpr_lower_bound": tpr_low, "fpr_upper_bound": fpr_high, "tpr_excess_lower_bound": tpr_low - fpr_high,
            "epsilon_lower_bound": max(eps), "epsilon_point": _epsilon_point(tp / len(m), fp / len(n)),
            "members": len(m), "nonmembers": len(n), "bound_confidence": 1 - self.alpha,
        }
        return self


def _epsilon_point(tpr: float, fpr: float) -> float | None:
    """ln(TPR / FPR), the point estimate the lower bound guards (None when FPR is 0)."""
    return math.log(tpr / fpr) if tpr > 0 and fpr > 0 else None


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


def white_box_scores(ctx: AuditContext) -> np.ndarray:
    scores = []
    for split in (ctx.train, ctx.holdout):
        s = np.asarray(ctx.generator.membership_scores(split, ctx.seed), dtype=np.float64)
        if s.shape != (len(split),) or not np.isfinite(s).all():
            raise ValueError(f"the generator's membership_scores returned shape {s.shape} (expected ({len(split)},)) "
                             "or non-finite values")
        scores.append(s)
    return np.concatenate(scores)


def roc_figure(summaries: list[AttackSummary]) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(5.5, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for s in summaries:
        y = np.r_[np.ones(len(s.members)), np.zeros(len(s.nonmembers))]
        fpr, tpr, _ = roc_curve(y, np.r_[s.members, s.nonmembers])
        ax.plot(fpr, tpr, lw=1.2, label=f"{s.label} (AUC {s.metrics['auc']:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate (holdout patients)")
    ax.set_ylabel("true positive rate (training patients)")
    ax.legend(fontsize=7, loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return Figure(name="mia_roc", title="Membership inference ROC curves (per patient)", png=buf.getvalue(),
                  public=True, caption="One curve per attack and feature space; the diagonal is guessing.")


@register_auditor
class MembershipInference(Auditor):
    name = "membership_inference"
    options = (
        Option("mia_bootstrap", int, 2000, "patient resamples for the attack AUC intervals", low=50, high=1000000),
        Option("white_box", bool, True, "also attack the generator with its own membership scores when given one"),
        Option("domias_max_points", int, 10000, "slices the DOMIAS density models are fitted on at most", low=10),
        Option("domias_components", int, 10, "PCA components of the DOMIAS density models", low=1, high=512),
    )
    group = "privacy"
    default_thresholds = {
        "privacy.mia_auc": (
            0.60, "<=",
            "best membership-inference AUC over attacks, training vs holdout patients (one-sided bootstrap lower "
            "bound, Bonferroni over attacks); guessing gives 0.5"),
        "privacy.mia_tpr_at_low_fpr": (
            0.05, "<=",
            "best attack's true-positive rate at the lowest false-positive rate the cohort supports (1% with 100+ "
            "holdout patients, else 5%), as the lower bound of TPR minus the upper bound of FPR (Clopper-Pearson)"),
    }

    def run(self, ctx: AuditContext) -> AuditResult:
        queries = Queries.build(ctx)
        spaces = feature_spaces(ctx)
        raw: list[tuple[str, str | None, np.ndarray]] = []
        for space in spaces:
            for attack, scores in black_box_scores(ctx, space, queries).items():
                raw.append((attack, space, scores))
        if ctx.generator is not None and ctx.option("white_box"):
            raw.append(("white_box", None, white_box_scores(ctx)))
        alpha = ALPHA / len(raw)
        delta = model_delta(ctx.model_card)
        n_boot = ctx.option("mia_bootstrap")
        summaries = []
        for i, (attack, space, scores) in enumerate(raw):
            members, nonmembers = queries.split(scores)
            summaries.append(AttackSummary(attack, space, members, nonmembers, alpha, delta, n_boot,
                                           ctx.seed + i).evaluate())
        best_auc = max(summaries, key=lambda s: s.metrics["auc_lower_bound"])
        best_tpr = max(summaries, key=lambda s: s.metrics["tpr_excess_lower_bound"])
        best_eps = max(summaries, key=lambda s: s.metrics["epsilon_lower_bound"])
        result = AuditResult(auditor=self.name, group=self.group)
        result.metrics = {
            "attacks": {s.label: s.metrics for s in summaries},
            "members": queries.n_train, "nonmembers": queries.n_holdout, "delta": delta,
            "family_alpha": ALPHA, "bonferroni_attacks": len(raw),
            "best_auc_attack": best_auc.label, "best_epsilon_attack": best_eps.label,
            "epsilon_lower_bound": best_eps.metrics["epsilon_lower_bound"],
        }
        a = best_auc.metrics
        result.checks.append(self.check(
            ctx, "privacy.mia_auc", a["auc_lower_bound"],
            details=f"{best_auc.label}: AUC {a['auc']:.3f} (95% CI {a['auc_ci95'][0]:.3f}-{a['auc_ci95'][1]:.3f}), "
                    f"lower bound at {a['bound_confidence']:.4f} confidence; {queries.n_train} training vs "
                    f"{queries.n_holdout} holdout patients"))
        t = best_tpr.metrics
        result.checks.append(self.check(
            ctx, "privacy.mia_tpr_at_low_fpr", t["tpr_excess_lower_bound"],
            details=f"{best_tpr.label}: TPR {t['tpr_at_low_fpr']:.3f} at FPR {t['fpr_at_low_fpr']:.3f} (target "
                    f"{t['fpr_target']:.2f}); TPR lower bound {t['tpr_lower_bound']:.3f}, FPR upper bound "
                    f"{t['fpr_upper_bound']:.3f}; empirical epsilon lower bound {best_eps.metrics['epsilon_lower_bound']:.3f} "
                    f"({best_eps.label}, delta {delta:g})"))
        dp = dp_consistency_check(ctx.model_card, best_eps.metrics["epsilon_lower_bound"], best_eps.label)
        if dp is not None:
            result.checks.append(dp)
        result.figures.append(roc_figure(summaries))
        return result
