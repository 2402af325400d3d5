"""Per-patient Dice and the paired patient bootstrap: checked against references and against simulated truth."""
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from auditors.utility import paired, planning
from auditors.base import CohortSizes
from tests.auditors.conftest import make_heart_slices


def test_patient_dice_is_the_phase_mean_of_3d_dice_checked_against_sklearn():
    test = make_heart_slices(3, size=24, seed=4)
    rng = np.random.default_rng(0)
    pred = test.labels.copy()
    flip = rng.random(pred.shape) < 0.05  # damage some pixels
    pred[flip] = rng.integers(0, 4, flip.sum())
    got = paired.patient_dice(pred, test)
    assert got.subjects == tuple(test.subjects) and list(got.vendors) == ["A", "B", "C"]
    for p, sid in enumerate(test.subjects):
        for name, k in (("RV", 1), ("MYO", 2), ("LV", 3)):
            ref = np.mean([f1_score((test.labels[sel] == k).ravel(), (pred[sel] == k).ravel())
                           for sel in ((test.subject_ids == sid) & (test.phases == ph) for ph in ("ED", "ES"))])
            assert got.by_structure[name][p] == pytest.approx(ref, abs=1e-12)
        assert got.mean[p] == pytest.approx(np.mean([got.by_structure[s][p] for s in ("RV", "MYO", "LV")]))
    perfect = paired.patient_dice(test.labels, test)
    assert np.allclose(perfect.mean, 1.0) and perfect.summary()["by_vendor"]["B"]["patients"] == 1


def test_difference_interval_is_scipys_bca_on_the_patient_differences():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.85, 0.05, 30), rng.normal(0.83, 0.05, 30)
    got = paired.paired_difference(a, b, confidence=0.95, n_resamples=2000, seed=3)
    ref = stats.bootstrap((a - b,), np.mean, confidence_level=0.90, n_resamples=2000, method="BCa",
                          random_state=np.random.default_rng(3)).confidence_interval
    assert (got.lower, got.upper) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert got.estimate == pytest.approx((a - b).mean()) and got.sd == pytest.approx((a - b).std(ddof=1))


def test_ratio_is_paired_over_patients():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.6, 0.95, 25)  # patients differ a lot, but the ratio per patient is steady
    a = base * 0.97 + rng.normal(0, 0.005, 25)
    got = paired.paired_ratio(a, base, n_resamples=2000)
    assert got.estimate == pytest.approx(a.mean() / base.mean())
    assert got.lower < got.estimate < got.upper and got.upper - got.lower < 0.01  # pairing removes patient spread
    unpaired = stats.bootstrap((a, base), lambda x, y, axis=-1: x.mean(axis) / y.mean(axis), paired=False,
                               confidence_level=0.9, n_resamples=2000, random_state=0).confidence_interval
    assert unpaired.high - unpaired.low > 3 * (got.upper - got.lower)


@pytest.mark.parametrize("truth", [0.0, 0.02])
def test_one_sided_bounds_cover_the_truth_at_their_level(truth):
    rng = np.random.default_rng(5)
    below = above = 0
    sims = 300
    for i in range(sims):
        d = truth + rng.normal(0, 0.04, 40)
        ci = paired.paired_difference(d, np.zeros(40), confidence=0.95, n_resamples=999, seed=i)
        below += ci.lower > truth
        above += ci.upper < truth
    # each bound misses on its side about 5% of the time (binomial SD 1.3% at 300 simulations)
    assert below / sims < 0.10 and above / sims < 0.10
    assert below + above > 0


def test_degenerate_samples_fail_closed_or_collapse():
    nan = paired.paired_difference([0.8], [0.7])
    assert nan.estimate == pytest.approx(0.1) and np.isnan(nan.lower) and np.isnan(nan.upper)
    same = paired.paired_difference([0.8, 0.9, 0.7], [0.7, 0.8, 0.6])
    assert (same.lower, same.upper) == pytest.approx((0.1, 0.1))
    none = paired.paired_difference([np.nan, np.nan], [0.5, 0.5])
    assert none.n == 0 and np.isnan(none.estimate)
    assert np.isnan(paired.paired_ratio([0.5, 0.6], [0.0, 0.0]).estimate)


def test_smallest_detectable_fails_the_check_with_80_percent_probability():
    rng = np.random.default_rng(7)
    sd, n, conf, threshold = 0.05, 40, 0.95, 0.0
    delta = paired.smallest_detectable(sd, n, conf)
    assert delta == pytest.approx((stats.norm.ppf(0.95) + stats.norm.ppf(0.8)) * sd / np.sqrt(n))
    sims, caught = 300, 0
    for i in range(sims):
        d = rng.normal(threshold - delta, sd, n)
        caught += paired.paired_difference(d, np.zeros(n), conf, n_resamples=999, seed=i).upper < threshold
    assert 0.68 < caught / sims < 0.92
    assert paired.patients_needed(delta, sd, conf) == pytest.approx(n, abs=1)


def test_plan_rises_with_the_test_split_and_the_margin():
    small, large = CohortSizes(100, 100, 100, 10), CohortSizes(100, 100, 100, 200)
    for name in planning.DEFAULT_THRESHOLDS:
        p_small = planning.plan_one(name, small, planning.DEFAULT_THRESHOLDS[name][0], 0.95)
        p_large = planning.plan_one(name, large, planning.DEFAULT_THRESHOLDS[name][0], 0.95)
        assert p_large["smallest_detectable"] < p_small["smallest_detectable"]
        assert p_large["honest_pass_probability"] >= p_small["honest_pass_probability"]
        strict = planning.plan_one(name, large, planning.ASSUMPTIONS[name].honest + 0.05, 0.95)
        assert strict["honest_pass_probability"] < 0.05  # a threshold above what honest data scores cannot pass
    assert planning.plan_one("utility.lovo_dice_gain", large, 0.0, 0.95)["test_patients"] == 200 // 3
