import numpy as np
import pytest
from scipy import stats

from auditors.privacy.calibration import (TailThreshold, cross_fitted_flags, fail_probability, fit_tail,
                                          holdout_to_confirm, pass_probability, patient_folds, patients_to_decide,
                                          proportion_interval, smallest_detectable)


def test_tail_fit_is_a_normal_quantile_of_fisher_z_with_a_standard_error_that_a_simulation_confirms():
    rng = np.random.default_rng(0)
    z = rng.normal(1.2, 0.17, 80)
    tail = fit_tail(np.tanh(z), 0.99, 0.975)
    assert np.arctanh(tail.tau) == pytest.approx(z.mean() + stats.norm.ppf(0.99) * z.std(ddof=1))
    assert tail.tau_low < tail.tau < tail.tau_high
    fitted = [np.arctanh(fit_tail(np.tanh(rng.normal(1.2, 0.17, 80)), 0.99, 0.975).tau) for _ in range(3000)]
    assert np.std(fitted) == pytest.approx(tail.se, rel=0.1)
    with pytest.raises(ValueError, match="3 holdout patients"):
        fit_tail([0.5, 0.6], 0.99, 0.95)


@pytest.mark.parametrize("n, level, confidence, factor", [
    (10, 0.99, 0.95, 3.981), (10, 0.95, 0.95, 2.911), (20, 0.99, 0.95, 3.295), (50, 0.95, 0.99, 2.269)])
def test_exact_bound_is_the_published_one_sided_normal_tolerance_factor(n, level, confidence, factor):
    """Natrella / ISO 16269-6 one-sided tolerance factors k: mean + k sd bounds the level quantile."""
    assert TailThreshold(level, 0.0, 1.0, n, confidence).exact_z_high() == pytest.approx(factor, abs=6e-4)
    assert TailThreshold(level, 0.3, 2.0, n, confidence).exact_z_high() == pytest.approx(0.3 + 2 * factor, abs=2e-3)


def test_exact_bound_covers_a_far_quantile_of_a_small_null_where_the_delta_method_does_not():
    """8 null patients, the 1 - 0.01 / 8 quantile: the exact bound lies above the true quantile in 97.5% of draws, the
    delta-method bound in clearly fewer (the false alarms of small honest cohorts)."""
    rng = np.random.default_rng(4)
    level, truth = 1.0 - 0.01 / 8, stats.norm.ppf(1.0 - 0.01 / 8)
    exact, delta = [], []
    for _ in range(4000):
        z = rng.standard_normal(8)
        tail = TailThreshold(level, z.mean(), z.std(ddof=1), 8, 0.975)
        exact.append(tail.exact_z_high() >= truth)
        delta.append(tail.z_bounds()[2] >= truth)
    assert np.mean(exact) == pytest.approx(0.975, abs=0.01)
    assert np.mean(delta) < 0.93


def test_holdout_to_confirm_is_the_smallest_null_whose_exact_bound_the_score_clears():
    tail = TailThreshold(1.0 - 0.01 / 20, 0.5, 0.2, 8, 0.975)
    score = float(np.tanh(tail.exact_z_high() - 0.05))  # just under the bar of 8 patients
    n = holdout_to_confirm(score, tail)
    assert n > 8
    at = lambda m: TailThreshold(tail.level, tail.mu, tail.sigma, m, tail.confidence).exact_z_high()
    assert at(n) < np.arctanh(score) <= at(n - 1)
    assert holdout_to_confirm(float(np.tanh(0.5 + tail._z * 0.2 - 0.01)), tail) is None  # under the quantile itself
    assert holdout_to_confirm(float(np.tanh(tail.exact_z_high() + 0.01)), tail) == 8  # already shown


def test_cross_fitted_flags_judge_each_fold_by_the_other():
    scores = np.tanh(np.array([1.0, 1.1, 1.2, 1.3, 1.0, 1.1, 1.2, 3.0]))
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    flags = cross_fitted_flags(scores, folds, 0.99)
    np.testing.assert_array_equal(flags, [False] * 7 + [True])
    assert sorted(np.bincount(patient_folds(11, seed=3))) == [5, 6]


def test_proportion_interval_is_clopper_pearson():
    for k, n, c in ((0, 10, 0.95), (3, 10, 0.95), (10, 10, 0.975), (7, 40, 0.99)):
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=2 * c - 1, method="exact")
        assert proportion_interval(k, k, n, c) == pytest.approx((ci.low, ci.high), abs=1e-12)
    low, up = proportion_interval(2, 6, 50, 0.95)  # a lenient count for the upper bound, a strict one for the lower
    assert low == pytest.approx(proportion_interval(2, 2, 50, 0.95)[0]) and up == proportion_interval(6, 6, 50, 0.95)[1]


def test_pass_and_fail_probabilities_match_a_simulation():
    rng = np.random.default_rng(1)
    k = rng.binomial(60, 0.04, 20000)
    up = stats.beta.ppf(0.975, k + 1, 60 - k)
    assert pass_probability(60, 0.04, 0.15, 0.975) == pytest.approx(np.mean(up <= 0.15), abs=0.01)
    k = rng.binomial(60, 0.3, 20000)
    low = np.where(k > 0, stats.beta.ppf(0.025, np.maximum(k, 1), 60 - k + 1), 0)
    assert fail_probability(60, 0.3, 0.15, 0.975) == pytest.approx(np.mean(low > 0.15), abs=0.01)
    f = smallest_detectable(100, 0.01, 0.10, 0.975)
    assert fail_probability(100, f + (1 - f) * 0.01, 0.10, 0.975) >= 0.8
    assert fail_probability(100, f - 0.01 + (1 - f + 0.01) * 0.01, 0.10, 0.975) < 0.8


def test_patients_to_decide():
    n = patients_to_decide(0.02, 0.10, 0.975)
    assert proportion_interval(round(0.02 * n), round(0.02 * n), n, 0.975)[1] <= 0.10
    assert patients_to_decide(0.10, 0.10, 0.975) is None
    assert patients_to_decide(0.30, 0.10, 0.975) is not None
