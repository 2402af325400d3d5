import numpy as np
import pytest
from scipy import stats

from auditors.base import AuditContext
from auditors.privacy.memorisation import (NNMemorisation, closer_to_train, cluster_bootstrap_lower, copied_patients,
                                           copy_threshold, nndr, proportion_lower_bound)
from auditors.privacy.patients import first_other_patient, per_patient

PIXELS_ONLY = {"feature_spaces": ["pixels"], "pixel_size": 16}


@pytest.mark.parametrize("how,reference", [("mean", np.mean), ("max", np.max), ("median", np.median)])
def test_per_patient_matches_a_loop(how, reference):
    rng = np.random.default_rng(1)
    codes, values = rng.integers(0, 7, 200), rng.standard_normal(200)
    expected = [reference(values[codes == p]) for p in range(7)]
    np.testing.assert_allclose(per_patient(values, codes, 7, how), expected)
    with pytest.raises(ValueError, match="at least one slice"):
        per_patient(values, codes, 8, how)


def test_copy_threshold_and_leave_one_patient_out_baseline_by_hand():
    sims = np.array([0.1, 0.9, 0.5, 0.6, 0.2, 0.3])
    codes = np.array([0, 0, 1, 1, 2, 2])
    tau, flags = copy_threshold(sims, codes, 3)
    assert tau == pytest.approx(0.825)  # 95th percentile of all six, linear interpolation: 0.6 + 0.75 * 0.3
    # Without patient 0 the 95th percentile of (0.5, 0.6, 0.2, 0.3) is 0.585: its 0.9 is a near-copy, its 0.1 not;
    # without patient 1 it is 0.81 and without patient 2 0.855: nothing of theirs exceeds it.
    np.testing.assert_array_equal(flags, [False, True, False, False, False, False])
    with pytest.raises(ValueError, match="2 holdout patients"):
        copy_threshold(sims[:2], codes[:2], 1)


def test_a_patient_is_a_copy_when_half_its_slices_are():
    flags = np.array([True, False, True, True, False, False, False, True])
    codes = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(copied_patients(flags, codes, 3), [True, True, False])


def test_cluster_bootstrap_lower_bound():
    codes = np.repeat(np.arange(10), 4)
    same = np.tile([True, False, False, False], 10)  # every patient 1 of 4: the rate is 0.25 in every resample
    assert cluster_bootstrap_lower(same, codes, 10, 0.95) == pytest.approx(0.25)
    mixed = np.repeat(np.arange(10) < 3, 4)  # 3 of 10 patients fully copied
    low = cluster_bootstrap_lower(mixed, codes, 10, 0.95, seed=3)
    assert 0.0 <= low < 0.3
    assert cluster_bootstrap_lower(mixed, codes, 10, 0.99, seed=3) <= low  # more confidence, lower bound


def test_proportion_lower_bound_is_one_sided_clopper_pearson():
    for k, n, c in ((0, 10, 0.95), (3, 10, 0.95), (10, 10, 0.975), (7, 40, 0.99)):
        two_sided = stats.binomtest(k, n).proportion_ci(confidence_level=2 * c - 1, method="exact").low
        assert proportion_lower_bound(k, n, c) == pytest.approx(two_sided, abs=1e-12)
    assert proportion_lower_bound(10, 10, 0.95) == pytest.approx(0.05 ** (1 / 10))  # k = n: alpha^(1/n)


def test_closer_to_train_share_and_sign_test_by_hand():
    codes = np.array([0, 0, 1, 1, 2, 3])
    d_train = np.array([0.1, 0.2, 0.5, 0.5, 0.3, 0.4])
    d_hold = np.array([0.3, 0.3, 0.4, 0.4, 0.3, 0.9])
    out = closer_to_train(d_train, d_hold, codes, 4)
    # Patients 0 and 3 closer to train, 1 farther, 2 tied (dropped, as in a sign test).
    assert (out["closer_to_train_patients"], out["patients_compared"], out["ties"]) == (2, 3, 1)
    assert out["closer_to_train_share"] == pytest.approx(2 / 3)
    assert out["closer_to_train_p"] == pytest.approx(0.5)  # P[Bin(3, 1/2) >= 2]


def test_nndr_uses_the_second_nearest_patient():
    index_codes = np.array([0, 0, 1, 2])
    ids = np.array([[0, 1, 2], [1, 0, 0]])
    sims = np.array([[0.98, 0.92, 0.5], [0.9, 0.8, 0.8]])
    first = index_codes[ids[:, 0]]
    np.testing.assert_array_equal(first_other_patient(ids, index_codes, first), [2, -1])
    ratio = nndr(sims, ids, index_codes)
    assert ratio[0] == pytest.approx(np.sqrt(2 - 2 * 0.98) / np.sqrt(2 - 2 * 0.5))
    assert np.isnan(ratio[1])  # only one patient listed: no ratio


def _run(train, holdout, synthetic, **options):
    ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0, quiet=True,
                       options={**PIXELS_ONLY, **options})
    result = NNMemorisation().run(ctx)
    return {c.name: c for c in result.checks}, result


def test_copies_of_training_patients_fail_and_new_patients_pass(blobs, copies):
    train, holdout = blobs(12, seed=1, prefix="t"), blobs(12, seed=2, prefix="h")
    checks, result = _run(train, holdout, copies(train, seed=3))
    assert not checks["privacy.near_copy_rate"].passed
    assert not checks["privacy.closer_to_train_share"].passed
    metrics = result.metrics["feature_spaces"]["pixels"]
    assert metrics["near_copy_patients"] == 12 and metrics["closer_to_train_share"] == 1.0
    assert metrics["baseline_rate_slices"] < 0.2
    assert all(not f.public for f in result.figures) and result.figures[0].png.startswith(b"\x89PNG")
    pair = metrics["closest_pairs"][0]
    assert pair["synthetic_subject"] == "copy-" + pair["train_subject"]  # the closest pair is the copied patient

    checks, result = _run(train, holdout, blobs(12, seed=4, prefix="n"))
    assert checks["privacy.near_copy_rate"].passed and checks["privacy.closer_to_train_share"].passed
    metrics = result.metrics["feature_spaces"]["pixels"]
    assert metrics["near_copy_rate_slices"] < 0.15 and metrics["near_copy_patients"] <= 2  # about the 5% baseline


def test_unequal_train_and_holdout_are_balanced_by_patients(blobs):
    train, holdout = blobs(16, seed=1, prefix="t"), blobs(8, seed=2, prefix="h")
    _, result = _run(train, holdout, blobs(8, seed=4, prefix="n"))
    assert result.metrics["feature_spaces"]["pixels"]["dcr_balancing"] == "train subsampled to 8 of 16 patients"


def test_threshold_override_and_unknown_feature_space(blobs):
    train, holdout = blobs(6, seed=1, prefix="t"), blobs(6, seed=2, prefix="h")
    ctx = AuditContext(train=train, holdout=holdout, synthetic=blobs(6, seed=4, prefix="n"), quiet=True,
                       options=PIXELS_ONLY, thresholds={"privacy.near_copy_rate": -1.0})
    checks = {c.name: c for c in NNMemorisation().run(ctx).checks}
    assert checks["privacy.near_copy_rate"].threshold == -1.0 and not checks["privacy.near_copy_rate"].passed
    ctx.options = {"feature_spaces": ["voxels"]}
    with pytest.raises(ValueError, match="feature_spaces"):
        NNMemorisation().run(ctx)
