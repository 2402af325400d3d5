"""Classifier two-sample test: can a classifier tell real holdout slices from synthetic ones?

A reviewer looking at the pictures is a discriminator; this is a reproducible one. Each slice is
described by its texture features (auditors.features.texture: noise, gradients, spatial structure
and spectra per region, which the learned embeddings are blind to), standardised with train's
slices of the same vendor so that vendor contrast is not a cue. A gradient-boosted tree classifier
(scikit-learn's HistGradientBoostingClassifier: non-linear, NaN-aware) is cross-validated BY
PATIENT (StratifiedGroupKFold): no patient is ever scored by a model that saw another of its slices.
The out-of-fold scores give the AUC; its bounds come from a patient bootstrap (patients of each side
resampled, their slices weighted by the draw). An indistinguishable generator has AUC 0.5.
"""
from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from auditors.base import AuditContext, AuditResult, Auditor, Figure, Option, register_auditor
from auditors.features.texture import get_texture_space, texture_features

from . import plots
from .resampling import planned, bootstrap_weights, bounds, decide_text, patient_index, planning

SHOWN = 8  # most confidently synthetic slices shown per report


def vendor_standardise(x: np.ndarray, vendors: np.ndarray, ref: np.ndarray, ref_vendors: np.ndarray) -> np.ndarray:
    """Features z-scored with the reference (train) slices of the same vendor; unknown vendors: pooled."""
    out = np.empty_like(x)
    pooled = (np.nanmean(ref, axis=0), np.nanstd(ref, axis=0))
    for v in np.unique(vendors):
        r = ref[ref_vendors == v]
        mu, sd = (np.nanmean(r, axis=0), np.nanstd(r, axis=0)) if len(r) >= 2 else pooled
        sd = np.where(np.isfinite(sd) & (sd > 1e-9), sd, 1.0)
        out[vendors == v] = (x[vendors == v] - mu) / sd
    return out


def out_of_fold_scores(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """P(synthetic) for every slice from a model that never saw its patient."""
    scores = np.full(len(y), np.nan)
    n_folds = int(min(folds, len(np.unique(groups[y == 0])), len(np.unique(groups[y == 1]))))
    if n_folds < 2:
        raise ValueError("the discriminator needs at least 2 patients on each side")
    split = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in split.split(x, y, groups):
        model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=15,
                                               min_samples_leaf=20, l2_regularization=1.0, random_state=seed)
        model.fit(x[train_idx], y[train_idx])
        scores[test_idx] = model.predict_proba(x[test_idx])[:, 1]
    return scores


def patient_bootstrap_auc(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, replicates: int,
                          rng: np.random.Generator) -> np.ndarray:
    """AUC replicates with the patients of each class resampled (slices weighted by their patient's draw)."""
    weights = np.zeros((replicates, len(y)))
    for cls in (0, 1):
        rows = np.flatnonzero(y == cls)
        ids, rank = patient_index(groups[rows])
        w = bootstrap_weights(len(ids), replicates, rng)
        weights[:, rows] = w[:, rank]
    return np.array([roc_auc_score(y, scores, sample_weight=w) if (w[y == 0].sum() > 0 and w[y == 1].sum() > 0)
                     else np.nan for w in weights])


def discriminate(ctx: AuditContext, folds: int, replicates: int) -> dict:
    space = get_texture_space(ctx)
    parts = {}
    for split in ("train", "holdout", "synthetic"):
        s = getattr(ctx, split)
        keep = s.has_label
        if not keep.any():
            raise ValueError(f"the {split} slices carry no label maps: the discriminator reads texture per structure")
        parts[split] = (texture_features(ctx, split)[keep], s.vendors[keep], s.subject_ids[keep], np.flatnonzero(keep))
    ref, ref_v = parts["train"][0], parts["train"][1]
    x = np.concatenate([vendor_standardise(parts[s][0], parts[s][1], ref, ref_v) for s in ("holdout", "synthetic")])
    y = np.concatenate([np.zeros(len(parts["holdout"][0]), int), np.ones(len(parts["synthetic"][0]), int)])
    # Patient ids could collide between a real and a synthetic cohort: keep the side in the group key.
    groups = np.concatenate([np.char.add("h|", parts["holdout"][2].astype(str)),
                             np.char.add("s|", parts["synthetic"][2].astype(str))])
    scores = out_of_fold_scores(x, y, groups, folds, ctx.seed)
    auc = float(roc_auc_score(y, scores))
    rng = np.random.default_rng([ctx.seed, 16])
    reps = patient_bootstrap_auc(y, scores, groups, replicates, rng)
    lo, hi = bounds(reps)
    by_vendor = {}
    vendors = np.concatenate([parts["holdout"][1], parts["synthetic"][1]])
    for v in np.unique(vendors):
        sel = vendors == v
        if len(np.unique(y[sel])) == 2:
            by_vendor[str(v)] = float(roc_auc_score(y[sel], scores[sel]))
    syn_rows = np.flatnonzero(y == 1)
    top = syn_rows[np.argsort(-scores[syn_rows], kind="stable")[:SHOWN]]
    return {"auc": auc, "lower": lo, "upper": hi, "se": float(np.nanstd(reps)), "replicates": replicates,
            "folds": folds, "by_vendor": by_vendor, "features": space.describe(),
            "slices": {"holdout": int((y == 0).sum()), "synthetic": int((y == 1).sum())},
            "patients": {"holdout": len(np.unique(parts["holdout"][2])),
                         "synthetic": len(np.unique(parts["synthetic"][2]))},
            "most_synthetic": [int(parts["synthetic"][3][i - len(parts["holdout"][0])]) for i in top],
            "most_synthetic_scores": [float(scores[i]) for i in top]}


@register_auditor
class DiscriminatorAuditor(Auditor):
    name = "discriminator"
    group = "fidelity"
    options = (Option("discriminator_folds", int, 5, "patient-grouped cross-validation folds of the real-vs-"
                      "synthetic classifier", low=2, high=20),)
    default_thresholds = {
        "fidelity.discriminator_auc": (0.6, "<=", "AUC of a classifier telling real holdout slices from synthetic "
                                                  "ones on texture features, cross-validated by patient (0.5: "
                                                  "indistinguishable)"),
    }

    def plan(self, sizes, thresholds, seed: int = 0) -> dict:
        """Planning from the law of the bound measured on the phantom (resampling.BOUND_AT_100), scaled to the sizes."""
        return {name: planned(name, sizes.synthetic, sizes.holdout, 0.5, float(thresholds.get(name, default)), op)
                for name, (default, op, _) in self.default_thresholds.items()}

    def run(self, ctx: AuditContext) -> AuditResult:
        res = discriminate(ctx, ctx.option("discriminator_folds"), ctx.option("fidelity_bootstrap"))
        name = "fidelity.discriminator_auc"
        threshold = ctx.threshold(name, self.default_thresholds[name][0])
        n = min(res["patients"].values())
        check = self.check(
            ctx, name, res["auc"], lower=res["lower"], upper=res["upper"], confidence=0.95,
            details=f"{res['folds']}-fold by patient, {res['slices']['holdout']} holdout / {res['slices']['synthetic']} "
                    f"synthetic slices, {res['replicates']} patient bootstraps; by vendor " +
                    ", ".join(f"{v} {a:.2f}" for v, a in res["by_vendor"].items()),
            decide=decide_text(res["auc"], res["lower"], res["upper"], threshold, "<=", n),
            plan=planning(res["se"], 0.5, threshold, "<="))
        shown = np.asarray(res["most_synthetic"], int)
        syn = ctx.synthetic
        png = plots.sample_grid({"most synthetic": syn.images[shown]}, {"most synthetic": syn.labels[shown]},
                                "Synthetic slices the discriminator found most confidently synthetic")
        figures = [Figure(name="fidelity_discriminator_top", title="Most confidently synthetic slices", png=png,
                          public=True, caption="Out-of-fold P(synthetic): " +
                          ", ".join(f"{p:.2f}" for p in res["most_synthetic_scores"]) + ". Synthetic images only.")]
        return AuditResult(self.name, self.group, metrics=res, checks=[check], figures=figures)
