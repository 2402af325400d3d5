"""Epsilon for a history of Gaussian mechanisms, from Opacus' PRV and RDP accountants, and noise calibration.

A history is Opacus' own: a list of `(noise_multiplier, sample_rate, steps)`. DP-SGD steps are Poisson-subsampled
Gaussian mechanisms (sample_rate = q); a statistic released once from all patients (the mask model's mean, say) is
the same mechanism with sample_rate 1. Both accountants read the same history; the gate uses the larger epsilon, so
the noise is calibrated until *both* are at or below the target (in practice the looser RDP bound decides).
The search is Opacus' `get_noise_multiplier` (double the noise until the budget holds, then bisect), extended to a
history that already holds other releases.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .opacus_adapter import History, set_history

ACCOUNTANTS = ("prv", "rdp")
MAX_SIGMA = 1e6
# The least noise the search tries: below it the accountants' series converge very slowly (minutes per call) and
# the epsilon is in the hundreds. A target still met at this noise is simply not binding (the ledger says so).
MIN_SIGMA = 0.5
# Opacus' default RDP orders plus larger ones: un-subsampled releases with much noise need high orders.
RDP_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 96, 128, 192, 256, 384, 512, 1024]


def check_accountant(name: str) -> str:
    if name not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {name!r}; choose one of {', '.join(ACCOUNTANTS)}")
    return name


def epsilon_for(history: History, delta: float, accountant: str) -> float:
    """(epsilon at `delta`) of the composition of every mechanism in `history`, by one Opacus accountant."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    check_accountant(accountant)
    if not history:
        return 0.0
    with warnings.catch_warnings():
        # RDP's "optimal order is the largest alpha" and PRV's log(0) at sample_rate 1 are harmless here.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        if accountant == "rdp":
            acc = RDPAccountant()
            set_history(acc, history)
            return float(acc.get_epsilon(delta, alphas=RDP_ALPHAS))
        acc = PRVAccountant()
        set_history(acc, history)
        return float(acc.get_epsilon(delta))  # PRV's upper bound (estimate + its numerical error)


@dataclass
class Epsilons:
    rdp: float
    prv: float | None  # None when the PRV accountant failed (it can run out of memory: opacus #602)
    prv_error: str | None = None

    @property
    def worst(self) -> float:
        return max(self.rdp, self.prv) if self.prv is not None else self.rdp


def epsilons(history: History, delta: float) -> Epsilons:
    """Both accountants on the same history; a PRV failure falls back to RDP alone, with the reason kept."""
    rdp = epsilon_for(history, delta, "rdp")
    try:
        prv = epsilon_for(history, delta, "prv")
    except (MemoryError, ValueError, RuntimeError, OverflowError, FloatingPointError) as exc:
        return Epsilons(rdp=rdp, prv=None, prv_error=f"{type(exc).__name__}: {str(exc)[:200]}")
    return Epsilons(rdp=rdp, prv=prv)


def _search(eps_of, target: float, tolerance: float, sigma_low: float = 0.0, sigma_high: float = 2.0) -> float:
    """Smallest noise (within `tolerance` in epsilon) with eps_of(noise) <= target.

    Opacus' `get_noise_multiplier` brackets by doubling and then bisects; an accountant call costs up to a second
    here, so the bracket is narrowed by false position on log(noise) (Illinois variant, which keeps both ends
    moving), falling back to bisection; the answer is always an evaluated noise whose epsilon is <= target."""
    eps_low = float("inf")
    if sigma_low < MIN_SIGMA:
        eps_low = eps_of(MIN_SIGMA)
        if eps_low <= target:
            return MIN_SIGMA
        sigma_low, sigma_high = MIN_SIGMA, max(sigma_high, MIN_SIGMA)
    eps_high = eps_of(sigma_high)
    while eps_high > target:
        sigma_low, eps_low = sigma_high, eps_high
        sigma_high *= 2
        if sigma_high > MAX_SIGMA:
            raise ValueError(f"the privacy budget epsilon={target:g} is too low for this training: no noise level "
                             f"reaches it; raise epsilon or train fewer epochs")
        eps_high = eps_of(sigma_high)
    # f_low, f_high: (possibly down-weighted) eps - target at the ends, used only to place the next guess.
    f_low, f_high, side = eps_low - target, eps_high - target, 0
    while target - eps_high > tolerance:
        sigma = (sigma_low + sigma_high) / 2
        if sigma_low > 0 and np.isfinite(f_low):
            a, b = np.log(sigma_low), np.log(sigma_high)
            x = b - f_high * (b - a) / (f_high - f_low)
            if a < x < b:
                sigma = float(np.exp(x))
        eps = eps_of(sigma)
        if eps <= target:
            sigma_high, eps_high, f_high = sigma, eps, eps - target
            if side == 1:
                f_low /= 2  # Illinois: the other end has not moved twice running, so pull the next guess to it
            side = 1
        else:
            sigma_low, eps_low, f_low = sigma, eps, eps - target
            if side == -1:
                f_high /= 2
            side = -1
    return sigma_high


def calibrate_noise(*, target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    prior: History = (), accountant: str = "prv", tolerance: float | None = None) -> tuple[float, str]:
    """The noise multiplier for `steps` subsampled Gaussian steps at `sample_rate` so that, composed with the
    `prior` releases, both accountants give epsilon <= target (the larger within `tolerance` below it).

    Returns the noise and the accountant whose epsilon binds (the larger one at that noise).
    `accountant` (the one Opacus tracks during training) does not change the noise: the gate reads the larger
    epsilon, so both must meet the target whichever is chosen."""
    check_accountant(accountant)
    if target_epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {target_epsilon}")
    if steps < 1:
        raise ValueError(f"DP training needs at least one step, got {steps}")
    tolerance = tolerance if tolerance is not None else min(0.01, 0.01 * target_epsilon)
    prior = list(prior)
    if prior:
        spent = epsilons(prior, delta).worst
        if spent >= target_epsilon:
            raise ValueError(f"the releases before training already spend epsilon {spent:.3g} of the {target_epsilon:g}"
                             f" budget; raise epsilon")

    def eps_of(name):
        return lambda sigma: epsilon_for(prior + [(sigma, sample_rate, steps)], delta, name)

    # RDP is searched (fast, and in practice the looser bound, so the one that binds); PRV, slower, is then checked
    # at that noise and searched upwards only if it is the larger.
    sigma, binding = _search(eps_of("rdp"), target_epsilon, tolerance), "rdp"
    try:
        if eps_of("prv")(sigma) > target_epsilon:
            sigma = _search(eps_of("prv"), target_epsilon, tolerance, sigma_low=sigma, sigma_high=sigma * 1.25)
            binding = "prv"
    except (MemoryError, RuntimeError, OverflowError, FloatingPointError, ValueError):
        pass  # PRV failed (opacus #602): RDP alone bounds epsilon, and the ledger records the failure
    return sigma, binding
