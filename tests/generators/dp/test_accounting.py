"""Calibration and accounting against Opacus' own accountants and noise search (the reference)."""
from __future__ import annotations

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from generators.dp.accounting import calibrate_noise, epsilon_for, epsilons


def test_epsilon_for_is_the_opacus_accountants():
    history = [(1.1, 0.2, 50)]
    prv = PRVAccountant()
    prv.history = list(history)
    assert epsilon_for(history, 1e-3, "prv") == pytest.approx(prv.get_epsilon(1e-3), rel=1e-9)
    rdp = RDPAccountant()
    rdp.history = list(history)
    # Same accountant; our orders include Opacus' defaults plus higher ones, so the bound can only be tighter.
    ours = epsilon_for(history, 1e-3, "rdp")
    assert ours <= rdp.get_epsilon(1e-3) + 1e-12
    assert ours == pytest.approx(rdp.get_epsilon(1e-3), rel=0.05)


def test_calibration_without_prior_matches_get_noise_multiplier():
    sigma, binding = calibrate_noise(target_epsilon=3.0, delta=1e-3, sample_rate=0.25, steps=40, accountant="rdp")
    reference = get_noise_multiplier(target_epsilon=3.0, target_delta=1e-3, sample_rate=0.25, steps=40,
                                     accountant="rdp", epsilon_tolerance=0.01)
    assert sigma == pytest.approx(reference, rel=0.02)
    assert binding == "rdp"


@pytest.mark.parametrize("target, q, steps, prior", [
    (1.0, 0.25, 40, []),
    (3.0, 1 / 3, 12, [(4.0, 1.0, 1), (4.0, 1.0, 1)]),
    (10.0, 0.1, 200, [(2.5, 1.0, 1)]),
])
def test_target_epsilon_is_met_within_five_percent(target, q, steps, prior):
    sigma, _ = calibrate_noise(target_epsilon=target, delta=1e-3, sample_rate=q, steps=steps, prior=prior)
    eps = epsilons(prior + [(sigma, q, steps)], 1e-3)
    assert eps.prv is not None
    assert eps.worst <= target
    assert eps.worst >= 0.95 * target
    assert eps.worst == max(eps.prv, eps.rdp)


def test_prior_releases_cost_noise():
    alone, _ = calibrate_noise(target_epsilon=3.0, delta=1e-3, sample_rate=0.25, steps=20)
    shared, _ = calibrate_noise(target_epsilon=3.0, delta=1e-3, sample_rate=0.25, steps=20, prior=[(3.0, 1.0, 2)])
    assert shared > alone


def test_unreachable_budget_fails_with_advice():
    with pytest.raises(ValueError, match="already spend"):
        calibrate_noise(target_epsilon=0.5, delta=1e-3, sample_rate=0.5, steps=10, prior=[(0.5, 1.0, 1)])


def test_a_target_no_noise_level_binds_stops_at_the_floor():
    from generators.dp.accounting import MIN_SIGMA
    sigma, _ = calibrate_noise(target_epsilon=1000.0, delta=1e-3, sample_rate=0.25, steps=10)
    assert sigma == MIN_SIGMA
    assert epsilons([(sigma, 0.25, 10)], 1e-3).worst <= 1000.0
