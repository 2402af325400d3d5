"""Diversity: are the synthetic slices as different from each other as real patients' slices are?

Mode collapse (one image, or a few, whatever the mask asked for) leaves the set's mean pairwise
distance near 0. The check is that distance for synthetic slices over the same for an equal-size
real holdout sample, in the segmenter's standardised features; the intra-set cosine similarity,
the same ratio in raw pixels, and the share of synthetic slices with a near-twin inside the
synthetic set are reported beside it.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist, squareform

from auditors.base import AuditContext, AuditResult, Auditor, register_auditor

from .resampling import (bootstrap_weights, bounds, decide_text, matched_plan, patient_index, planning,
                         relative_se)
from .spaces import available_spaces, matched_indices, standardised

CHECKED_SPACE = "segmenter"
MAX_PAIRS_SLICES = 2000  # pdist is quadratic: larger sets are subsampled


def intra_set(x: np.ndarray) -> dict[str, float]:
    """Mean pairwise Euclidean distance, mean pairwise cosine similarity and nearest-twin distances (and the
    condensed pairwise distances, for the bootstrap)."""
    x = np.asarray(x, dtype=np.float64)
    d = pdist(x)
    norms = np.linalg.norm(x, axis=1)
    if np.all(norms > 0):
        # Mean over pairs i < j of u_i . u_j for unit rows u: (|sum u|^2 - n) / (n (n - 1)), no (n, n) matrix.
        n, total = len(x), (x / norms[:, None]).sum(axis=0)
        mean_cos = float((total @ total - n) / (n * (n - 1))) if n > 1 else float("nan")
    else:
        mean_cos = float("nan")
    square = np.full((len(x), len(x)), np.inf)
    square[np.triu_indices(len(x), 1)] = d
    square = np.minimum(square, square.T)
    return {"mean_distance": float(d.mean()), "mean_cosine_similarity": mean_cos,
            "nearest_twin": square.min(axis=1), "pdist": d}


def diversity_in(x_syn: np.ndarray, x_real: np.ndarray, distances: dict | None = None) -> dict:
    """The diversity figures; `distances`, when given, receives the two sets' condensed pairwise distances."""
    syn, real = intra_set(x_syn), intra_set(x_real)
    if distances is not None:
        distances.update(synthetic=syn["pdist"], real=real["pdist"])
    # A synthetic slice whose nearest synthetic neighbour is closer than 99% of real slices'
    # nearest real neighbours is a near-duplicate inside the set.
    twin_cut = float(np.percentile(real["nearest_twin"], 1))
    return {
        "synthetic_mean_distance": syn["mean_distance"], "real_mean_distance": real["mean_distance"],
        "ratio": syn["mean_distance"] / real["mean_distance"] if real["mean_distance"] > 0 else float("nan"),
        "synthetic_mean_cosine_similarity": syn["mean_cosine_similarity"],
        "real_mean_cosine_similarity": real["mean_cosine_similarity"],
        "synthetic_near_duplicate_share": float((syn["nearest_twin"] < twin_cut).mean()),
        "real_near_duplicate_share": float((real["nearest_twin"] < twin_cut).mean()),
    }


def _weighted_mean_distance(d: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mean pairwise distance for (R, N) slice weights: pairs of a slice with itself (or its copies) left out."""
    num = np.einsum("rn,rn->r", w @ d, w)
    den = w.sum(axis=1) ** 2 - (w ** 2).sum(axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_ratio(x_syn, syn_ids, x_real, real_ids, replicates: int, rng: np.random.Generator,
                   distances: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Mean pairwise distance ratio (synthetic over real) with patient-bootstrap bounds; `distances`: the two
    sets' condensed pairwise distances when already computed (pdist of x_syn and x_real)."""
    reps, points, patients = [], [], []
    for k, (x, ids) in enumerate(((x_syn, syn_ids), (x_real, real_ids))):
        d = squareform(distances[k] if distances is not None else pdist(np.asarray(x, np.float64)))
        _, rank = patient_index(ids)
        w = bootstrap_weights(rank.max() + 1, replicates, rng)[:, rank]
        reps.append(_weighted_mean_distance(d, w))
        points.append(float(_weighted_mean_distance(d, np.ones((1, len(d))))[0]))
        patients.append(int(rank.max() + 1))
    r = np.where(reps[1] > 0, reps[0] / np.where(reps[1] > 0, reps[1], 1.0), np.nan)
    lo, hi = bounds(r)
    return {"estimate": points[0] / points[1] if points[1] > 0 else float("nan"), "lower": lo, "upper": hi,
            "se": float(np.nanstd(r)), "patients": {"synthetic": patients[0], "real": patients[1]}}


@register_auditor
class DiversityAuditor(Auditor):
    name = "diversity"
    group = "fidelity"
    default_thresholds = {
        "fidelity.diversity_ratio": (0.5, ">=", "mean pairwise distance between synthetic slices over the same "
                                                "between real holdout slices (segmenter features): mode collapse"),
    }

    def plan(self, sizes, thresholds, seed: int = 0) -> dict:
        """From the law of the bound measured on the phantom (resampling.BOUND_AT_100), at the matched size."""
        return matched_plan(self.default_thresholds, sizes, thresholds)

    def run(self, ctx: AuditContext) -> AuditResult:
        idx = matched_indices(ctx)
        rng = np.random.default_rng([ctx.seed, 8])
        n = len(idx["holdout"])
        keep = np.sort(rng.choice(n, size=min(n, MAX_PAIRS_SLICES), replace=False))
        sel = {s: idx[s][keep] for s in idx}
        results, checked = {}, {}
        for space in available_spaces():
            feats = standardised(ctx, space)
            results[space] = diversity_in(feats["synthetic"][sel["synthetic"]], feats["holdout"][sel["holdout"]],
                                          checked if space == CHECKED_SPACE else None)
        pixels = diversity_in(ctx.synthetic.images[sel["synthetic"]].reshape(len(keep), -1),
                              ctx.holdout.images[sel["holdout"]].reshape(len(keep), -1))
        results["pixels"] = pixels
        main = results[CHECKED_SPACE]
        feats = standardised(ctx, CHECKED_SPACE)
        gated = weighted_ratio(feats["synthetic"][sel["synthetic"]], ctx.synthetic.subject_ids[sel["synthetic"]],
                               feats["holdout"][sel["holdout"]], ctx.holdout.subject_ids[sel["holdout"]],
                               ctx.option("fidelity_bootstrap"), rng, (checked["synthetic"], checked["real"]))
        main["gated"] = gated
        name = "fidelity.diversity_ratio"
        threshold = ctx.threshold(name, self.default_thresholds[name][0])
        check = self.check(ctx, name, gated["estimate"], lower=gated["lower"], upper=gated["upper"], confidence=0.95,
                           decide=decide_text(gated["estimate"], gated["lower"], gated["upper"], threshold, ">=",
                                              min(gated["patients"].values())),
                           plan=planning(relative_se(gated), 1.0, threshold, ">="),
                           details=f"mean pairwise distance {main['synthetic_mean_distance']:.3g} (synthetic) vs "
                           f"{main['real_mean_distance']:.3g} (real holdout), {len(keep)} slices each; pixel-space "
                           f"ratio {pixels['ratio']:.2f}")
        return AuditResult(self.name, self.group, metrics={"spaces": results, "slices_per_set": int(len(keep)),
                                                           "checked_space": CHECKED_SPACE}, checks=[check])
