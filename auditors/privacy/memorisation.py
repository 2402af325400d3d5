"""Nearest-neighbour memorisation: near-copies of training patients, closeness to train vs holdout, NNDR.

Per feature space (pixels: Pearson correlation; embedding: cosine), with FAISS exact search:

- near-copy rate: a synthetic slice is a near-copy when its similarity to its nearest training slice
  exceeds tau, the 95th percentile of the holdout slices' maximum similarity to train (Dar et al.'s rule,
  calibrated on real patients the generator never saw: a new real slice resembles some training slice
  that much only 5% of the time; estimated from every holdout slice, not from a handful of patient
  maxima, so that a small holdout does not make tau noisy). A synthetic patient is a near-copy when at
  least half of its slices are. The baseline is the same two rates for the holdout patients themselves,
  each judged against a tau computed without that patient (leave one patient out).
- closer-to-train share: per synthetic patient, the median over its slices of DCR(train) - DCR(holdout)
  is negative when it sits closer to train; an honest generator gives 50% (SDMetrics). Train and holdout
  are first balanced to the same number of patients (a larger set is closer by chance alone).
- NNDR: distance to the nearest training patient over the distance to the second nearest (another
  patient); small means the slice singles out one patient.

Checks use one-sided Clopper-Pearson lower bounds over patients, Bonferroni-corrected over feature
spaces, so that a small cohort does not fail by chance.
"""
from __future__ import annotations

import io

import numpy as np
from scipy import stats

from auditors.base import AuditContext, AuditResult, Auditor, Figure, register_auditor
from auditors.features import FEATURE_SPACES, features

from .neighbours import cosine_distance_to_euclidean, index_for
from .patients import first_other_patient, max_slices_per_patient, per_patient

COPY_PERCENTILE = 95.0  # tau: this percentile of holdout slices' maximum similarity to train
COPY_MAJORITY = 0.5  # a patient is a near-copy when at least this share of its slices are
NEAR_COPY_ALPHA = 0.05  # one-sided, split over feature spaces and the two rates (slices, patients)
BOOTSTRAP = 2000  # patient resamples for the slice rate's confidence bound
CLOSER_ALPHA = 0.01  # one-sided, split over feature spaces
CLOSEST_PAIRS = 8


def feature_spaces(ctx: AuditContext) -> list[str]:
    return list(ctx.option("feature_spaces"))


def proportion_lower_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower confidence bound of a proportion k/n."""
    if n == 0:
        return float("nan")
    return 0.0 if k == 0 else float(stats.beta.ppf(1.0 - confidence, k, n - k + 1))


def copy_threshold(holdout_similarity: np.ndarray, holdout_codes: np.ndarray, n_patients: int,
                   percentile: float = COPY_PERCENTILE) -> tuple[float, np.ndarray]:
    """tau from the holdout slices' maximum similarity to train, and each holdout slice's leave-one-patient-out
    near-copy flag (above the tau computed without its patient): the real-data baseline of the rule."""
    values = np.asarray(holdout_similarity, dtype=np.float64)
    if n_patients < 2:
        raise ValueError("calibrating the near-copy threshold needs at least 2 holdout patients")
    tau = float(np.percentile(values, percentile))
    flags = np.zeros(len(values), dtype=bool)
    for patient in range(n_patients):  # a loop over patients, each a vectorised percentile
        mine = holdout_codes == patient
        flags[mine] = values[mine] > np.percentile(values[~mine], percentile)
    return tau, flags


def copied_patients(flags: np.ndarray, codes: np.ndarray, n_patients: int) -> np.ndarray:
    """Per patient: are at least COPY_MAJORITY of its slices near-copies?"""
    return per_patient(flags.astype(np.float64), codes, n_patients, "mean") >= COPY_MAJORITY


def cluster_bootstrap_lower(flags: np.ndarray, codes: np.ndarray, n_patients: int, confidence: float,
                            n_boot: int = BOOTSTRAP, seed: int = 0, chunk: int = 256) -> float:
    """One-sided lower bound of the slice-level rate, resampling patients (their slices are not independent)."""
    hits = np.bincount(codes, weights=flags.astype(np.float64), minlength=n_patients)
    sizes = np.bincount(codes, minlength=n_patients).astype(np.float64)
    rng = np.random.default_rng(seed)
    rates = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        weights = rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=b).astype(np.float64)
        rates[start:start + b] = (weights @ hits) / (weights @ sizes)
    return float(np.quantile(rates, 1.0 - confidence))


def balanced_subset(codes: np.ndarray, n_patients: int, keep: int, seed: int) -> np.ndarray:
    """Slice indices of `keep` patients drawn at random (seeded) out of `n_patients`."""
    chosen = np.random.default_rng(seed).choice(n_patients, size=keep, replace=False)
    return np.flatnonzero(np.isin(codes, chosen))


def closer_to_train(dcr_train: np.ndarray, dcr_holdout: np.ndarray, codes: np.ndarray, n_patients: int) -> dict:
    """Share of synthetic patients whose median slice sits closer to train, with a sign test against 0.5."""
    diff = per_patient(dcr_train - dcr_holdout, codes, n_patients, "median")
    closer, farther = int((diff < 0).sum()), int((diff > 0).sum())
    n = closer + farther  # ties say nothing either way (sign test)
    p = float(stats.binomtest(closer, n, 0.5, alternative="greater").pvalue) if n else float("nan")
    return {"closer_to_train_patients": closer, "patients_compared": n, "ties": int(n_patients - n),
            "closer_to_train_share": closer / n if n else float("nan"), "closer_to_train_p": p}


def nndr(sim: np.ndarray, ids: np.ndarray, index_codes: np.ndarray) -> np.ndarray:
    """Nearest-patient over second-nearest-patient distance per query (NaN when only one patient is listed)."""
    first = index_codes[ids[:, 0]]
    col = first_other_patient(ids, index_codes, first)
    rows = np.arange(len(ids))
    d1 = cosine_distance_to_euclidean(sim[:, 0])
    d2 = cosine_distance_to_euclidean(sim[rows, np.maximum(col, 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((col >= 0) & (d2 > 0), d1 / d2, np.nan)
    return ratio


def _median(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")


def space_metrics(ctx: AuditContext, space: str, n_spaces: int) -> tuple[dict, list[tuple[int, int, float]]]:
    """Every memorisation metric in one feature space, and the closest (synthetic, train, similarity) pairs."""
    syn_codes, syn_patients = ctx.synthetic.subject_codes()
    tr_codes, tr_patients = ctx.train.subject_codes()
    ho_codes, ho_patients = ctx.holdout.subject_codes()
    synthetic, holdout = features(ctx, space, "synthetic"), features(ctx, space, "holdout")
    train_index, hold_index = index_for(ctx, space, "train"), index_for(ctx, space, "holdout")
    k = min(train_index.ntotal, max_slices_per_patient(tr_codes) + 1)  # reaches a second patient for NNDR
    sim_st, id_st = train_index.search(synthetic, k)
    sim_sh, _ = hold_index.search(synthetic, 1)
    sim_ht, id_ht = train_index.search(holdout, k)

    # Near-copies, calibrated on real holdout patients.
    tau, loo_flags = copy_threshold(sim_ht[:, 0], ho_codes, len(ho_patients))
    flags = sim_st[:, 0] > tau
    copies = int(copied_patients(flags, syn_codes, len(syn_patients)).sum())
    confidence = 1.0 - NEAR_COPY_ALPHA / (2 * n_spaces)
    m = {
        "copy_threshold": tau,
        "near_copy_rate_slices": float(flags.mean()),
        "near_copy_rate_slices_lower_bound": cluster_bootstrap_lower(flags, syn_codes, len(syn_patients), confidence,
                                                                     seed=ctx.seed),
        "near_copy_patients": copies, "synthetic_patients": len(syn_patients),
        "near_copy_rate_patients": copies / len(syn_patients),
        "near_copy_rate_patients_lower_bound": proportion_lower_bound(copies, len(syn_patients), confidence),
        "near_copy_confidence": confidence,
        "baseline_rate_slices": float(loo_flags.mean()),
        "baseline_rate_patients": float(copied_patients(loo_flags, ho_codes, len(ho_patients)).mean()),
        "max_similarity_to_train": float(sim_st[:, 0].max()),
        "median_similarity_to_train": float(np.median(sim_st[:, 0])),
        "holdout_median_similarity_to_train": float(np.median(sim_ht[:, 0])),
    }
    m["near_copy_rate_lower_bound"] = max(m["near_copy_rate_slices_lower_bound"],
                                          m["near_copy_rate_patients_lower_bound"])

    # Distance to closest record, train vs holdout balanced to the same number of patients.
    dcr_train = cosine_distance_to_euclidean(sim_st[:, 0])
    dcr_hold = cosine_distance_to_euclidean(sim_sh[:, 0])
    n_t, n_h = len(tr_patients), len(ho_patients)
    if n_t > n_h:
        sub = balanced_subset(tr_codes, n_t, n_h, ctx.seed)
        dcr_train = cosine_distance_to_euclidean(index_for(ctx, space, "train", sub, "balanced").search(synthetic, 1)[0][:, 0])
        m["dcr_balancing"] = f"train subsampled to {n_h} of {n_t} patients"
    elif n_h > n_t:
        sub = balanced_subset(ho_codes, n_h, n_t, ctx.seed)
        dcr_hold = cosine_distance_to_euclidean(index_for(ctx, space, "holdout", sub, "balanced").search(synthetic, 1)[0][:, 0])
        m["dcr_balancing"] = f"holdout subsampled to {n_t} of {n_h} patients"
    else:
        m["dcr_balancing"] = "none (train and holdout have the same number of patients)"
    m["dcr_train_median"], m["dcr_holdout_median"] = float(np.median(dcr_train)), float(np.median(dcr_hold))
    m.update(closer_to_train(dcr_train, dcr_hold, syn_codes, len(syn_patients)))
    closer_conf = 1.0 - CLOSER_ALPHA / n_spaces
    m["closer_to_train_lower_bound"] = proportion_lower_bound(m["closer_to_train_patients"], m["patients_compared"],
                                                              closer_conf)
    m["closer_to_train_confidence"] = closer_conf

    # Nearest-neighbour distance ratio, synthetic and (baseline) holdout.
    m["nndr_median_synthetic"] = _median(nndr(sim_st, id_st, tr_codes))
    m["nndr_median_holdout"] = _median(nndr(sim_ht, id_ht, tr_codes))

    # Closest pairs, one per synthetic patient, for the internal report.
    order = np.argsort(-sim_st[:, 0], kind="stable")
    _, first = np.unique(syn_codes[order], return_index=True)
    best = order[np.sort(first)][:CLOSEST_PAIRS]
    pairs = [(int(i), int(id_st[i, 0]), float(sim_st[i, 0])) for i in best]
    m["closest_pairs"] = [{"synthetic_subject": str(ctx.synthetic.subject_ids[s]),
                           "synthetic_slice": int(ctx.synthetic.slice_index[s]),
                           "synthetic_phase": str(ctx.synthetic.phases[s]),
                           "train_subject": str(ctx.train.subject_ids[t]), "train_slice": int(ctx.train.slice_index[t]),
                           "train_phase": str(ctx.train.phases[t]), "similarity": sim}
                          for s, t, sim in pairs]
    return m, pairs


def closest_pairs_figure(ctx: AuditContext, pairs, space: str, tau: float) -> Figure:
    """Synthetic slices above their nearest training slices (real patients: internal only)."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(1.6 * max(len(pairs), 1), 3.6), dpi=100)
    for col, (s, t, sim) in enumerate(pairs):
        for row, (image, label) in enumerate(((ctx.synthetic.images[s], f"syn {sim:.3f}"),
                                              (ctx.train.images[t], "train"))):
            ax = fig.add_subplot(2, len(pairs), row * len(pairs) + col + 1)
            ax.imshow(image, cmap="gray")
            ax.set_title(label, fontsize=8, color="crimson" if row == 0 and sim > tau else "black")
            ax.axis("off")
    fig.suptitle(f"closest synthetic-train pairs ({space}; near-copy above {tau:.3f})", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return Figure(name=f"closest_pairs_{space}", title=f"Closest synthetic / training pairs ({space})", png=buf.getvalue(),
                  public=False, caption="Top row: synthetic slices; bottom row: their nearest training slices "
                                        "(real patients, internal report only). Red: above the near-copy threshold.")


@register_auditor
class NNMemorisation(Auditor):
    name = "nn_memorisation"
    group = "privacy"
    default_thresholds = {
        "privacy.near_copy_rate": (
            0.10, "<=",
            "near-copy rate of the synthetic cohort: the larger of the slice rate (bootstrap over patients) and the "
            "patient rate (Clopper-Pearson) lower bounds, worst feature space; real holdout slices give 5% by "
            "construction"),
        "privacy.closer_to_train_share": (
            0.55, "<=",
            "share of synthetic patients closer to train than to holdout (one-sided 99% Clopper-Pearson lower "
            "bound, worst feature space); an honest generator gives 0.5"),
    }

    def run(self, ctx: AuditContext) -> AuditResult:
        spaces = feature_spaces(ctx)
        result = AuditResult(auditor=self.name, group=self.group)
        per_space = {}
        for space in spaces:
            metrics, pairs = space_metrics(ctx, space, len(spaces))
            per_space[space] = metrics
            result.figures.append(closest_pairs_figure(ctx, pairs, space, metrics["copy_threshold"]))
        result.metrics = {"feature_spaces": per_space}
        worst_copy = max(spaces, key=lambda s: per_space[s]["near_copy_rate_lower_bound"])
        w = per_space[worst_copy]
        result.checks.append(self.check(
            ctx, "privacy.near_copy_rate", w["near_copy_rate_lower_bound"],
            details=f"{worst_copy}: near-copy slices {w['near_copy_rate_slices']:.3f} (lower bound "
                    f"{w['near_copy_rate_slices_lower_bound']:.3f}; holdout baseline {w['baseline_rate_slices']:.3f}), "
                    f"near-copy patients {w['near_copy_patients']}/{w['synthetic_patients']} (lower bound "
                    f"{w['near_copy_rate_patients_lower_bound']:.3f}; holdout baseline "
                    f"{w['baseline_rate_patients']:.3f}); tau={w['copy_threshold']:.4f}; bounds at "
                    f"{w['near_copy_confidence']:.4f} confidence"))
        worst_closer = max(spaces, key=lambda s: np.nan_to_num(per_space[s]["closer_to_train_lower_bound"], nan=1.0))
        w = per_space[worst_closer]
        result.checks.append(self.check(
            ctx, "privacy.closer_to_train_share", w["closer_to_train_lower_bound"],
            details=f"{worst_closer}: {w['closer_to_train_patients']}/{w['patients_compared']} synthetic patients "
                    f"closer to train ({w['closer_to_train_share']:.3f}, sign test p={w['closer_to_train_p']:.3g}); "
                    f"lower bound at {w['closer_to_train_confidence']:.4f} confidence; {w['dcr_balancing']}"))
        return result
