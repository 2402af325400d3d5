"""Cohort-size planning for the membership-inference checks, from the same bounds the audit computes.

For `n` training and `m` holdout patients, split in two cross-fitting halves as the audit does:

- `privacy.mia_auc`: the cross-fitted AUC is normal around the true AUC with the variance the audit uses (the
  larger of the Hanley-McNeil variance at that AUC and the null variance, per half; the halves' correlation under
  no leak, mia_stats.CROSS_FIT_CORRELATION, included). An honest
  generator (true AUC 0.5) passes when the upper bound is inside the threshold; with `k` kept attacks all must
  pass (taken as independent: the conservative case). The smallest detectable leak is the true AUC whose
  release is blocked (upper bound above the threshold: fail or inconclusive) with 80% probability.
- `privacy.mia_tpr_at_low_fpr`: exact. Each half's threshold sits at its non-members' (1 - FPR) order statistic,
  whose true FPR is Beta(k+1, n-k) distributed for continuous scores; the true positives are binomial given that
  threshold (beta-binomial under no leak; a binormal shift d for a leak); the halves are convolved.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from .mia_stats import ALPHA, clopper_pearson, cross_fit_se, low_fpr_supported, null_auc_variance

POWER = 0.8  # "caught with 80% probability"


def half_sizes(n: int) -> tuple[int, int]:
    """Sizes of the two cross-fitting halves (auditors.privacy.mia_stats.halves: half 0 gets the odd one)."""
    return (n + 1) // 2, n // 2


def hanley_mcneil_variance(auc: float, n_members: int, n_nonmembers: int) -> float:
    """Variance of an AUC estimate at a true AUC (Hanley & McNeil 1982), no smaller than the null variance."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_members - 1) * (q1 - auc * auc) + (n_nonmembers - 1) * (q2 - auc * auc)) / \
        (n_members * n_nonmembers)
    return max(var, null_auc_variance(n_members, n_nonmembers))


def planned_se(auc: float, n_train: int, n_holdout: int, correlated: bool = True) -> float:
    """The cross-fitted AUC's standard error as the audit computes it (mia_stats.cross_fit_se), or, with
    `correlated=False`, the actual spread under a leak (the direction is stable, the halves independent)."""
    v0, v1 = (hanley_mcneil_variance(auc, a, b) for a, b in zip(half_sizes(n_train), half_sizes(n_holdout)))
    return cross_fit_se(v0, v1) if correlated else math.sqrt(v0 + v1) / 2


def _auc_pass_probability(auc: float, threshold: float, n_train: int, n_holdout: int, alpha: float) -> float:
    """P(upper bound <= threshold): the bound uses the audit's standard error; the estimate spreads as under no
    leak at AUC 0.5 (halves correlated) and with independent halves under a leak."""
    se = planned_se(auc, n_train, n_holdout)
    spread = se if auc <= 0.5 else planned_se(auc, n_train, n_holdout, correlated=False)
    return float(stats.norm.cdf((threshold - stats.norm.ppf(1 - alpha) * se - auc) / spread))


def plan_auc(n_train: int, n_holdout: int, threshold: float, keep: int = 1, alpha: float = ALPHA) -> dict:
    if min(n_train, n_holdout) < 2:
        return {"honest_pass_probability": 0.0, "smallest_detectable": None, "detectable_unit": "AUC",
                "note": "needs at least 2 training and 2 holdout patients"}
    honest = _auc_pass_probability(0.5, threshold, n_train, n_holdout, alpha) ** keep
    low, high = 0.5, 1.0  # bisection: the pass probability falls as the true AUC grows
    if 1.0 - _auc_pass_probability(high, threshold, n_train, n_holdout, alpha) < POWER:
        smallest = None
    else:
        for _ in range(50):
            mid = (low + high) / 2
            blocked = 1.0 - _auc_pass_probability(mid, threshold, n_train, n_holdout, alpha)
            low, high = (low, mid) if blocked >= POWER else (mid, high)
        smallest = high
    return {"honest_pass_probability": honest, "smallest_detectable": smallest,
            "detectable_unit": "true AUC of the best attack, release blocked with 80% probability"}


def _tp_pmf(n_members: int, n_nonmembers: int, fpr: float, shift: float, grid: int = 400) -> np.ndarray:
    """pmf of one half's true positives; the threshold's true FPR u ~ Beta(k+1, n-k); member scores N(shift, 1)."""
    k = min(int(math.floor(fpr * n_nonmembers)), n_nonmembers - 1)
    if shift == 0.0:
        return stats.betabinom.pmf(np.arange(n_members + 1), n_members, k + 1, n_nonmembers - k)
    u = stats.beta.ppf((np.arange(grid) + 0.5) / grid, k + 1, n_nonmembers - k)  # quantile grid of u
    tpr = stats.norm.sf(stats.norm.isf(u) - shift)
    return stats.binom.pmf(np.arange(n_members + 1)[None, :], n_members, tpr[:, None]).mean(axis=0)


def _tpr_pass_probability(n_train: int, n_holdout: int, fpr: float, threshold: float, shift: float,
                          alpha: float) -> float:
    pmf = np.ones(1)
    for m, n in zip(half_sizes(n_train), half_sizes(n_holdout)):
        pmf = np.convolve(pmf, _tp_pmf(m, n, fpr, shift))
    upper = np.array([clopper_pearson(tp, n_train, alpha)[1] for tp in range(n_train + 1)])
    return float(pmf[upper <= threshold].sum())


def plan_tpr(n_train: int, n_holdout: int, threshold: float, fpr: float, keep: int = 1, alpha: float = ALPHA
             ) -> dict:
    if min(n_train, n_holdout) < 2 or not low_fpr_supported(n_holdout, fpr):
        need = math.ceil(5.0 / fpr - 1e-9)
        return {"honest_pass_probability": 0.0, "smallest_detectable": None, "detectable_unit": "TPR",
                "note": f"not estimable: {fpr:g} FPR needs at least {need} holdout patients (cannot pass)"}
    honest = _tpr_pass_probability(n_train, n_holdout, fpr, threshold, 0.0, alpha) ** keep
    low, high = 0.0, 8.0
    for _ in range(40):
        mid = (low + high) / 2
        blocked = 1.0 - _tpr_pass_probability(n_train, n_holdout, fpr, threshold, mid, alpha)
        low, high = (low, mid) if blocked >= POWER else (mid, high)
    smallest = float(stats.norm.sf(stats.norm.isf(fpr) - high))
    return {"honest_pass_probability": honest, "smallest_detectable": smallest,
            "detectable_unit": f"true TPR at {fpr:g} FPR, release blocked with 80% probability"}


def _smallest(passes, largest: int) -> int | None:
    """The smallest n in [2, largest] with passes(n) true, for a passes that stays true once true; else None."""
    if not passes(largest):
        return None
    low, high = 2, largest
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if passes(mid) else (mid + 1, high)
    return low


def holdout_needed(n_train: int, threshold: float, keep: int = 1, target: float = 0.95, alpha: float = ALPHA,
                   largest: int = 100000) -> int | None:
    """The smallest holdout at which an honest generator passes `mia_auc` with probability `target` (training set
    of `n_train` patients); None when no holdout up to `largest` does."""
    return _smallest(lambda m: _auc_pass(n_train, m, threshold, keep, alpha) >= target, largest)


def equal_sizes_needed(threshold: float, keep: int = 1, target: float = 0.95, alpha: float = ALPHA,
                       largest: int = 100000) -> int | None:
    """The smallest n such that n training and n holdout patients pass an honest generator with probability
    `target`; None when no n up to `largest` does (the pass probability grows with n)."""
    return _smallest(lambda n: _auc_pass(n, n, threshold, keep, alpha) >= target, largest)


def _auc_pass(n_train: int, n_holdout: int, threshold: float, keep: int, alpha: float) -> float:
    return _auc_pass_probability(0.5, threshold, n_train, n_holdout, alpha) ** keep
