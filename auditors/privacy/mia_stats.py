"""Statistics of membership inference, per patient: AUC with patient-bootstrap intervals, cross-fitted attack selection,
TPR at a low FPR, the empirical epsilon bound.

The attack that is reported is never chosen on the patients it is scored on. Members (training patients) and
non-members (holdout patients) are each split in two halves; on one half every candidate attack is ranked (and
flipped when its AUC is below 0.5, as an attacker would), the best `k` are scored on the other half, and the two
halves swap roles. The rank-j attack's AUC is the mean of its two held-out AUCs. Each half's variance comes from a
patient bootstrap (members and non-members resampled apart), never below the null variance of an AUC at its sizes
(a handful of patients gives a wide interval rather than a falsely narrow one). The two halves are NOT independent:
each is flipped (and chosen) by the other, so under no leak e0 - 1/2 = sign(d1) d0 and e1 - 1/2 = sign(d0) d1 have
covariance E|d0| E|d1| = (2/pi) sd0 sd1 (normal d). `CROSS_FIT_CORRELATION` carries that into the variance: measured
by simulation (50 + 50 patients per half, 1-16 candidate attacks correlated 0.5-0.99), the spread of the cross-fitted
AUC without leak is 1.16-1.30 times the independent-halves figure, and sqrt(1 + 2/pi) = 1.28 with it. With a real
leak the direction is stable and the covariance vanishes, so the correction only widens the interval there.

Gating (auditors.base): pass needs the upper bound of every kept attack inside the threshold (`worst_case`:
no Bonferroni split on the pass side, at `1 - alpha`); the lower bounds that decide `fail` are Bonferroni-adjusted
over the kept attacks (`1 - alpha / k`) so that keeping more attacks does not raise false alarms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05  # one-sided error of each bound
CROSS_FIT_CORRELATION = 2 / math.pi  # correlation of the two halves' AUCs under no leak (module docstring)


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds of a proportion k/n, each holding with probability 1 - alpha."""
    low = 0.0 if k <= 0 else float(stats.beta.ppf(alpha, k, n - k + 1))
    high = 1.0 if k >= n else float(stats.beta.ppf(1 - alpha, k + 1, n - k))
    return low, high


def rank_auc(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
    """AUC along the last axis from average ranks (Mann-Whitney U), vectorised over leading axes."""
    n_m, n_n = members.shape[-1], nonmembers.shape[-1]
    ranks = stats.rankdata(np.concatenate([members, nonmembers], axis=-1), axis=-1)
    return (ranks[..., :n_m].sum(axis=-1) - n_m * (n_m + 1) / 2) / (n_m * n_n)


def null_auc_variance(n_members: int, n_nonmembers: int) -> float:
    """Variance of the AUC of an attack that cannot tell the classes apart (Mann-Whitney U under H0, no ties)."""
    return (n_members + n_nonmembers + 1) / (12.0 * n_members * n_nonmembers)


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


def auc_variance(members: np.ndarray, nonmembers: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """AUC and its variance over patient resamples, never below the null variance at these sizes (a handful of
    patients gives a wide interval, not a falsely narrow one: a bootstrap of 2 patients has almost no spread)."""
    auc = float(rank_auc(members, nonmembers))
    var = float(np.var(bootstrap_auc(members, nonmembers, n_boot, seed), ddof=1))
    return auc, max(var, null_auc_variance(len(members), len(nonmembers)))


def normal_bounds(estimate: float, se: float, alpha_low: float, alpha_high: float) -> tuple[float, float]:
    """One-sided Wald bounds at 1 - alpha_low (lower) and 1 - alpha_high (upper), clipped to [0, 1]."""
    lower = estimate - stats.norm.ppf(1 - alpha_low) * se
    upper = estimate + stats.norm.ppf(1 - alpha_high) * se
    return float(np.clip(lower, 0.0, 1.0)), float(np.clip(upper, 0.0, 1.0))


def halves(n: int, rng: np.random.Generator) -> np.ndarray:
    """A balanced random split of n patients into halves 0 and 1 (half 0 gets the odd one)."""
    fold = np.arange(n) % 2
    return fold[rng.permutation(n)]


def low_fpr_supported(n_nonmembers: int, fpr: float) -> bool:
    """A false-positive rate is observable only with at least 5 / FPR non-members (5 expected false positives)."""
    return n_nonmembers >= math.ceil(5.0 / fpr - 1e-9)


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


def epsilon_upper_bound(tp: int, n_members: int, fp: int, n_nonmembers: int, delta: float, alpha: float) -> float:
    """The largest epsilon this operating point is compatible with: the same inequality with TPR at its upper and
    FPR at its lower Clopper-Pearson bound (infinite when no false positive can be excluded)."""
    _, tpr_high = clopper_pearson(tp, n_members, alpha / 2)
    fpr_low, _ = clopper_pearson(fp, n_nonmembers, alpha / 2)
    if fpr_low <= 0:
        return math.inf
    return max(0.0, math.log(max(tpr_high - delta, 1e-300) / fpr_low))


def largest_showable_epsilon(n_members: int, n_nonmembers: int, delta: float, alpha: float) -> float:
    """What a perfect attack (every member above every non-member) would prove at these sizes: the most any
    attack can show on this cohort."""
    return epsilon_lower_bound(n_members, n_members, 0, n_nonmembers, delta, alpha)


def threshold_at_fpr(nonmembers: np.ndarray, fpr: float) -> tuple[float, int]:
    """Threshold at the (k+1)-th largest non-member score, k = floor(fpr x n): 'member' means score > threshold.

    The threshold depends on the non-members only, so the Clopper-Pearson bound on TPR holds as is, and the one on
    FPR equals the distribution-free bound of an order statistic."""
    k = min(int(math.floor(fpr * len(nonmembers))), len(nonmembers) - 1)
    return float(np.sort(nonmembers)[::-1][k]), k


@dataclass
class Candidate:
    """One candidate attack: per-patient scores (higher = more member-like) of every member and non-member."""
    label: str
    members: np.ndarray
    nonmembers: np.ndarray


@dataclass
class KeptAttack:
    """The rank-j attack of the cross-fitted selection: what each half chose and how it scored on the other."""
    rank: int
    chosen: tuple[str, str]  # label scored on half 0 (chosen on half 1), label scored on half 1
    flipped: tuple[bool, bool]
    auc: float
    se: float
    half_aucs: tuple[float, float]
    scores: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # per half: (members, non-members)

    @property
    def label(self) -> str:
        a, b = (f"{c}{' (flipped)' if f else ''}" for c, f in zip(self.chosen, self.flipped))
        return a if a == b else f"{a} | {b}"


def cross_fit_se(var0: float, var1: float) -> float:
    """Standard error of the mean of the two halves' AUCs, correlated as the module docstring says."""
    return math.sqrt(var0 + var1 + 2 * CROSS_FIT_CORRELATION * math.sqrt(var0 * var1)) / 2


def cross_fit(candidates: list[Candidate], member_half: np.ndarray, nonmember_half: np.ndarray, keep: int,
              n_boot: int = 2000, seed: int = 0) -> list[KeptAttack]:
    """Rank the candidates on one half, score the best `keep` on the other, both ways (see the module docstring)."""
    if not candidates:
        raise ValueError("membership inference needs at least one candidate attack")
    keep = min(keep, len(candidates))
    chosen: list[list[tuple[int, bool]]] = []
    for select in (1, 0):  # half 0 is scored with what half 1 chose, and the other way round
        ranked = []
        for i, c in enumerate(candidates):
            auc = float(rank_auc(c.members[member_half == select], c.nonmembers[nonmember_half == select]))
            ranked.append((max(auc, 1.0 - auc), -i, i, auc < 0.5))  # ties: the earlier candidate
        ranked.sort(reverse=True)
        chosen.append([(i, flip) for _, _, i, flip in ranked[:keep]])
    kept = []
    for rank in range(keep):
        aucs, variances, scores, labels, flips = [], [], [], [], []
        for half in (0, 1):
            i, flip = chosen[half][rank]
            sign = -1.0 if flip else 1.0
            m = sign * candidates[i].members[member_half == half]
            n = sign * candidates[i].nonmembers[nonmember_half == half]
            auc, var = auc_variance(m, n, n_boot, seed + 7 * rank + half)
            aucs.append(auc), variances.append(var), scores.append((m, n))
            labels.append(candidates[i].label), flips.append(flip)
        kept.append(KeptAttack(rank + 1, tuple(labels), tuple(flips), float(np.mean(aucs)),
                               cross_fit_se(*variances), tuple(aucs), tuple(scores)))
    return kept


def auc_parts(kept: list[KeptAttack], alpha: float = ALPHA) -> list[tuple[str, float, float, float]]:
    """(label, AUC, lower, upper) per kept attack: upper at 1 - alpha, lower Bonferroni-adjusted over the kept."""
    out = []
    for a in kept:
        lower, upper = normal_bounds(a.auc, a.se, alpha / len(kept), alpha)
        out.append((a.label, a.auc, lower, upper))
    return out


def tpr_counts(attack: KeptAttack, fpr: float) -> tuple[int, int, int, int]:
    """(true positives, members, false positives, non-members) pooled over the two halves, each half thresholded at
    its own non-members' (1 - fpr) order statistic."""
    tp = fp = n_m = n_n = 0
    for m, n in attack.scores:
        threshold, k = threshold_at_fpr(n, fpr)
        tp += int((m > threshold).sum())
        fp += int((n > threshold).sum())
        n_m, n_n = n_m + len(m), n_n + len(n)
    return tp, n_m, fp, n_n


def tpr_parts(kept: list[KeptAttack], fpr: float, alpha: float = ALPHA) -> list[tuple[str, float, float, float]]:
    """(label, TPR, lower, upper) per kept attack at the target FPR: Clopper-Pearson on the members, upper at
    1 - alpha, lower Bonferroni-adjusted over the kept attacks."""
    out = []
    for a in kept:
        tp, n_m, _, _ = tpr_counts(a, fpr)
        lower, _ = clopper_pearson(tp, n_m, alpha / len(kept))
        _, upper = clopper_pearson(tp, n_m, alpha)
        out.append((a.label, tp / n_m, lower, upper))
    return out


FP_SHARES = (0.0, 0.05, 0.1, 0.25, 0.5)  # operating points tried for the empirical epsilon lower bound


def epsilon_summary(attack: KeptAttack, fpr: float, delta: float, alpha: float = ALPHA) -> dict:
    """Empirical epsilon of the top attack: the lower bound (best of the operating points in FP_SHARES, Bonferroni
    over them), the point estimate and upper bound at the target FPR, and the most this cohort could show at all."""
    lows = []
    for share in FP_SHARES:
        tp, n_m, fp, n_n = tpr_counts(attack, share)
        lows.append(epsilon_lower_bound(tp, n_m, fp, n_n, delta, alpha / len(FP_SHARES)))
    tp, n_m, fp, n_n = tpr_counts(attack, fpr)
    if fp == 0:  # too few non-members for a false positive at this rate: judge at the median instead
        tp, n_m, fp, n_n = tpr_counts(attack, 0.5)
    tpr, fpr_seen = tp / n_m, fp / n_n
    point = math.log(tpr / fpr_seen) if tpr > 0 and fpr_seen > 0 else (0.0 if tpr == 0 else math.inf)
    return {"epsilon_lower_bound": max(lows), "epsilon_point": max(point, 0.0),
            "epsilon_upper_bound": epsilon_upper_bound(tp, n_m, fp, n_n, delta, alpha),
            "largest_showable_epsilon": largest_showable_epsilon(n_m, n_n, delta, alpha / len(FP_SHARES)),
            "operating_point": {"tp": tp, "members": n_m, "fp": fp, "nonmembers": n_n}}
