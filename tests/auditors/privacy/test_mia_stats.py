"""The statistics of membership inference against references: sklearn, scipy, a naive DeLong, Monte Carlo."""
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from auditors.base import worst_case
from auditors.privacy.mia_stats import (Candidate, auc_parts, bootstrap_auc, clopper_pearson, cross_fit,
                                        epsilon_lower_bound, epsilon_upper_bound, halves, largest_showable_epsilon,
                                        low_fpr_supported, null_auc_variance, rank_auc, threshold_at_fpr,
                                        tpr_counts, tpr_parts)


def naive_delong(m, n):
    """DeLong et al. (1988) straight from the definition: O(m n) pairwise comparisons."""
    psi = (m[:, None] > n[None, :]) + 0.5 * (m[:, None] == n[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / len(m) + v01.var(ddof=1) / len(n)


def test_rank_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m, n = rng.integers(0, 5, 13).astype(float), rng.integers(0, 6, 9).astype(float)  # many ties
        y = np.r_[np.ones(13), np.zeros(9)]
        assert rank_auc(m, n) == pytest.approx(roc_auc_score(y, np.r_[m, n]))
    batch_m, batch_n = rng.standard_normal((4, 13)), rng.standard_normal((4, 9))
    expected = [roc_auc_score(np.r_[np.ones(13), np.zeros(9)], np.r_[a, b]) for a, b in zip(batch_m, batch_n)]
    np.testing.assert_allclose(rank_auc(batch_m, batch_n), expected)


def test_bootstrap_variance_agrees_with_delong():
    rng = np.random.default_rng(1)
    for shift in (0.0, 0.8):
        m, n = rng.normal(shift, 1, 60), rng.normal(0, 1, 50)
        auc, var = naive_delong(m, n)
        boot = bootstrap_auc(m, n, 4000, seed=3)
        assert abs(boot.mean() - auc) < 0.01
        assert np.var(boot, ddof=1) == pytest.approx(var, rel=0.2)
    a, b = bootstrap_auc(m, n, 300, seed=7), bootstrap_auc(m, n, 300, seed=7)
    np.testing.assert_array_equal(a, b)


def test_null_variance_matches_monte_carlo():
    rng = np.random.default_rng(2)
    aucs = rank_auc(rng.standard_normal((20000, 12)), rng.standard_normal((20000, 7)))
    assert aucs.var() == pytest.approx(null_auc_variance(12, 7), rel=0.05)


def test_clopper_pearson_by_hand():
    assert clopper_pearson(0, 10, 0.05) == (0.0, pytest.approx(1 - 0.05 ** 0.1))
    assert clopper_pearson(10, 10, 0.05) == (pytest.approx(0.05 ** 0.1), 1.0)
    low, high = clopper_pearson(3, 10, 0.025)
    ci = stats.binomtest(3, 10).proportion_ci(confidence_level=0.95, method="exact")
    assert (low, high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_epsilon_bounds_by_hand():
    t = 0.05 ** (1 / 1000)
    expected = math.log((1 - 1e-5 - (1 - t)) / (1 - t))
    assert epsilon_lower_bound(1000, 1000, 0, 1000, 1e-5, 0.1) == pytest.approx(expected)
    assert epsilon_lower_bound(5, 10, 5, 10, 1e-5, 0.05) == 0.0  # guessing proves nothing
    # The upper bound: TPR at its upper and FPR at its lower Clopper-Pearson bound.
    tpr_high = stats.beta.ppf(0.975, 31, 70)
    fpr_low = stats.beta.ppf(0.025, 5, 96)
    assert epsilon_upper_bound(30, 100, 5, 100, 1e-5, 0.05) == pytest.approx(math.log((tpr_high - 1e-5) / fpr_low))
    assert epsilon_upper_bound(30, 100, 0, 100, 1e-5, 0.05) == math.inf


def test_a_small_cohort_can_still_show_epsilon_half():
    # The issue: at 21 / 10 patients no epsilon above 0.5 could ever be shown (Bonferroni over 9 attacks and 6
    # operating points). With the attack chosen on other patients only the operating points are corrected for.
    assert largest_showable_epsilon(21, 10, 1e-5, 0.05 / 5) > 0.6
    assert largest_showable_epsilon(100, 100, 1e-5, 0.01) > largest_showable_epsilon(21, 10, 1e-5, 0.01)


def test_low_fpr_support_needs_five_expected_false_positives():
    assert low_fpr_supported(100, 0.05) and not low_fpr_supported(99, 0.05)
    assert low_fpr_supported(500, 0.01) and not low_fpr_supported(499, 0.01)


def test_threshold_and_counts_by_hand():
    nonmembers = np.array([4.5, 2.0, 1.0, 0.0])
    assert threshold_at_fpr(nonmembers, 0.0) == (4.5, 0)
    assert threshold_at_fpr(nonmembers, 0.25) == (2.0, 1)


def test_halves_are_balanced_and_seeded():
    a = halves(11, np.random.default_rng(0))
    assert sorted(np.bincount(a)) == [5, 6]
    np.testing.assert_array_equal(a, halves(11, np.random.default_rng(0)))


def _split(n, rng):
    return halves(n, rng)


def test_the_attack_is_scored_on_patients_it_was_not_chosen_on():
    rng = np.random.default_rng(4)
    mh, nh = _split(40, rng), _split(40, rng)
    # `lucky` separates the classes perfectly on half 1 only; on half 0 it is noise.
    members, nonmembers = rng.standard_normal(40), rng.standard_normal(40)
    members[mh == 1] += 10
    lucky = Candidate("lucky", members, nonmembers)
    steady = Candidate("steady", rng.normal(0.8, 1, 40), rng.normal(0, 1, 40))
    [kept] = cross_fit([lucky, steady], mh, nh, keep=1, n_boot=200)
    assert kept.chosen[0] == "lucky"  # chosen on half 1 ...
    assert kept.half_aucs[0] < 0.8  # ... and scored where it is noise: no optimism from the choice
    assert kept.chosen[1] == "steady" or kept.half_aucs[1] > 0.9


def test_an_attack_below_one_half_is_flipped_on_the_selection_half():
    rng = np.random.default_rng(5)
    mh, nh = _split(30, rng), _split(30, rng)
    reversed_scores = Candidate("reversed", rng.normal(-2, 1, 30), rng.normal(0, 1, 30))
    [kept] = cross_fit([reversed_scores], mh, nh, keep=1, n_boot=200)
    assert kept.flipped == (True, True) and kept.auc > 0.85 and "(flipped)" in kept.label


def test_keeping_more_attacks_never_loosens_the_gate():
    rng = np.random.default_rng(6)
    mh, nh = _split(50, rng), _split(50, rng)
    cands = [Candidate(f"a{i}", rng.normal(0.1 * i, 1, 50), rng.normal(0, 1, 50)) for i in range(5)]
    uppers = []
    for keep in range(1, 6):
        kept = cross_fit(cands, mh, nh, keep=keep, n_boot=300, seed=1)
        uppers.append(worst_case(auc_parts(kept), "<=")[3])
        tpr_upper = worst_case(tpr_parts(kept, 0.1), "<=")[3]
        assert tpr_upper >= worst_case(tpr_parts(kept[:1], 0.1), "<=")[3]
    assert all(b >= a for a, b in zip(uppers, uppers[1:]))


def test_tpr_counts_pool_the_two_halves():
    rng = np.random.default_rng(7)
    mh, nh = _split(40, rng), _split(40, rng)
    [kept] = cross_fit([Candidate("x", rng.normal(3, 1, 40), rng.normal(0, 1, 40))], mh, nh, keep=1, n_boot=100)
    tp, n_m, fp, n_n = tpr_counts(kept, 0.1)
    assert (n_m, n_n) == (40, 40) and fp == 4  # floor(0.1 x 20) false positives in each half
    assert tp >= 30

