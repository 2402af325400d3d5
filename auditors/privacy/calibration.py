"""Copy thresholds calibrated on real new patients, and the binomial bounds and planning figures of rates.

A patient's copy score is a similarity (a correlation in [-1, 1]); real holdout patients give its null
distribution. Its Fisher z-transform, atanh(score), is close to normal across patients, so the null's
upper tail is taken from a normal fit: the 99th percentile of 100 patients is one order statistic, the
fit uses all of them. The fit's own sampling error (the uncertainty of tau) is carried into the bounds:
the safe-side bound of a rate counts flags at the LOWER confidence bound of tau (more flags), the other
side at the upper one (fewer flags).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

Z_CLIP = 0.999999  # atanh(1) is infinite: an exact copy maps to a large, finite z


def fisher_z(scores) -> np.ndarray:
    return np.arctanh(np.clip(np.asarray(scores, dtype=np.float64), -Z_CLIP, Z_CLIP))


@dataclass(frozen=True)
class TailThreshold:
    """The `level` quantile of a null fitted on `n` patients (mean `mu`, sd `sigma` of Fisher z), with one-sided
    confidence bounds at `confidence` for the fitted quantile."""
    level: float
    mu: float
    sigma: float
    n: int
    confidence: float

    @property
    def _z(self) -> float:
        return float(stats.norm.ppf(self.level))

    @property
    def se(self) -> float:
        """Standard error of mu + z sigma (delta method: var(mu) = s^2/n, var(sigma) ~ s^2/(2(n-1)))."""
        return self.sigma * math.sqrt(1.0 / self.n + self._z ** 2 / (2.0 * max(self.n - 1, 1)))

    def z_bounds(self) -> tuple[float, float, float]:
        q = self.mu + self._z * self.sigma
        half = float(stats.norm.ppf(self.confidence)) * self.se
        return q - half, q, q + half

    def exact_z_high(self) -> float:
        """The exact one-sided upper `confidence` bound of mu + z sigma under the normal model: the tolerance factor
        of the noncentral t, k = t'_confidence(n - 1, z sqrt(n)) / sqrt(n) (ISO 16269-6). The delta-method bound of
        `z_bounds` is too low in a far tail of a small null (measured 2026-12-07: 1 and 2 honest 8 / 8 / 8 draws of
        20 confirmed a "copy"); this one is what a copy must clear to be shown one."""
        root = math.sqrt(self.n)
        return self.mu + float(stats.nct.ppf(self.confidence, self.n - 1, self._z * root)) / root * self.sigma

    @property
    def tau(self) -> float:
        return float(np.tanh(self.z_bounds()[1]))

    @property
    def tau_low(self) -> float:
        return float(np.tanh(self.z_bounds()[0]))

    @property
    def tau_high(self) -> float:
        return float(np.tanh(self.z_bounds()[2]))


def fit_tail(null_scores, level: float, confidence: float) -> TailThreshold:
    """Normal fit on the Fisher z of real new patients' scores; needs at least 3 patients (a spread)."""
    z = fisher_z(null_scores)
    if len(z) < 3:
        raise ValueError(f"calibrating a copy threshold needs at least 3 holdout patients, got {len(z)}")
    return TailThreshold(level=level, mu=float(z.mean()), sigma=max(float(z.std(ddof=1)), 1e-6), n=len(z),
                         confidence=confidence)


@functools.lru_cache(maxsize=256)
def confirm_pass_probability(n_synthetic: int, n_holdout: int, alpha: float, confidence: float,
                             draws: int = 4000, seed: int = 0) -> float:
    """The chance that no honest synthetic patient is confirmed as a copy in one part, under the null model of the
    rule: every score normal in Fisher z (holdout and honest synthetic alike), the bar the larger of the upper
    `confidence` bound of the fitted (1 - alpha / n_synthetic) quantile and the holdout's largest score. Monte Carlo
    over the holdout's draws (seeded: the same figure every time), each exact over the synthetic patients."""
    if n_holdout < 3 or n_synthetic < 1:
        return 1.0  # too few to fit a null: the part confirms nothing
    rng = np.random.default_rng(seed)
    null = rng.standard_normal((draws, n_holdout))
    mu, sigma = null.mean(axis=1), null.std(axis=1, ddof=1)
    z = float(stats.norm.ppf(1.0 - alpha / n_synthetic))
    se = sigma * math.sqrt(1.0 / n_holdout + z ** 2 / (2.0 * (n_holdout - 1)))
    bar = np.maximum(mu + z * sigma + float(stats.norm.ppf(confidence)) * se, null.max(axis=1))
    return float(np.mean(stats.norm.cdf(bar) ** n_synthetic))


def holdout_to_confirm(score: float, tail: TailThreshold, limit: int = 100000) -> int | None:
    """The smallest null (holdout) size at which `score` would clear the exact bound of `tail`'s quantile, were the
    null's mean and spread what they are now (None when it sits at or below the quantile itself: no size shows it)."""
    z = float(fisher_z(score))
    if z <= tail.mu + tail._z * tail.sigma:
        return None

    def shown(n: int) -> bool:
        return TailThreshold(tail.level, tail.mu, tail.sigma, n, tail.confidence).exact_z_high() < z

    low = high = tail.n  # a fitted tail has n >= 3
    while not shown(high):
        if high >= limit:
            return None
        low, high = high, min(2 * high, limit)
    while high - low > 1:  # the exact bound falls as the null grows
        mid = (low + high) // 2
        low, high = (low, mid) if shown(mid) else (mid, high)
    return high


def cross_fitted_flags(null_scores, folds: np.ndarray, level: float) -> np.ndarray:
    """Each holdout patient judged against the tau fitted on the OTHER fold(s): the out-of-sample baseline of the
    rule, so that the patients who set tau never also grade it."""
    scores = np.asarray(null_scores, dtype=np.float64)
    flags = np.zeros(len(scores), dtype=bool)
    for fold in np.unique(folds):
        mine = folds == fold
        flags[mine] = scores[mine] > fit_tail(scores[~mine], level, 0.5).tau
    return flags


def patient_folds(n: int, seed: int, k: int = 2) -> np.ndarray:
    """A seeded assignment of n patients to k folds of (nearly) equal size."""
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def _clopper_pearson(k_low, k_high, n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The one-sided Clopper-Pearson bounds for counts given as scalars or arrays (the beta quantiles)."""
    k_low, k_high = np.asarray(k_low), np.asarray(k_high)
    alpha = 1.0 - confidence
    with np.errstate(all="ignore"):
        lower = np.where(k_low <= 0, 0.0, stats.beta.ppf(alpha, np.maximum(k_low, 1), n - k_low + 1))
        upper = np.where(k_high >= n, 1.0, stats.beta.ppf(1.0 - alpha, k_high + 1, np.maximum(n - k_high, 1)))
    return lower, upper


def proportion_interval(k_low: int, k_high: int, n: int, confidence: float) -> tuple[float, float]:
    """Clopper-Pearson: the lower bound from k_low successes, the upper from k_high, each one-sided at `confidence`
    (k_low <= k_high when the counts come from a conservative and a lenient rule)."""
    if n <= 0:
        return float("nan"), float("nan")
    lower, upper = _clopper_pearson(k_low, k_high, n, confidence)
    return float(lower), float(upper)


@functools.lru_cache(maxsize=64)
def _bounds_by_count(n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of `proportion_interval(k, k, n, confidence)` for every k = 0..n in one vectorised call; the
    planning sums below reuse them for every rate they try."""
    ks = np.arange(n + 1)
    lower, upper = _clopper_pearson(ks, ks, n, confidence)
    lower.flags.writeable = upper.flags.writeable = False
    return lower, upper


def pass_probability(n: int, p: float, threshold: float, confidence: float) -> float:
    """Chance that k ~ Bin(n, p) gives a Clopper-Pearson upper bound at or below `threshold` (exact sum)."""
    ks = np.arange(n + 1)
    ok = _bounds_by_count(int(n), float(confidence))[1] <= threshold
    return float(stats.binom.pmf(ks[ok], n, p).sum())


def fail_probability(n: int, p: float, threshold: float, confidence: float) -> float:
    """Chance that k ~ Bin(n, p) gives a Clopper-Pearson lower bound above `threshold` (exact sum)."""
    ks = np.arange(n + 1)
    bad = _bounds_by_count(int(n), float(confidence))[0] > threshold
    return float(stats.binom.pmf(ks[bad], n, p).sum())


def smallest_detectable(n: int, base: float, threshold: float, confidence: float, power: float = 0.8,
                        steps: int = 200) -> float | None:
    """Smallest fraction f of leaking patients (each flagged for sure; the rest flagged at `base`) that fails the
    check with probability >= `power`; None when even f = 1 does not."""
    for f in np.linspace(0.0, 1.0, steps + 1):
        if fail_probability(n, f + (1.0 - f) * base, threshold, confidence) >= power:
            return float(f)
    return None


def patients_to_decide(rate: float, threshold: float, confidence: float, limit: int = 100000) -> int | None:
    """The smallest cohort at which the observed `rate` would give a decided check (pass if below the threshold,
    fail if above); None when the rate sits on the threshold or no cohort up to `limit` would do."""
    if not math.isfinite(rate) or rate == threshold:
        return None
    n = 2
    while n <= limit:
        k = int(round(rate * n))
        low, up = proportion_interval(k, k, n, confidence)
        if (rate < threshold and up <= threshold) or (rate > threshold and low > threshold):
            return n
        n = int(math.ceil(n * 1.25))
    return None
