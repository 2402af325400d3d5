import numpy as np
import pytest
from scipy import linalg
from sklearn.metrics.pairwise import polynomial_kernel

from auditors.fidelity import distances


def _reference_fd(a, b):
    """The pytorch-fid formula with scipy's general matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


def _reference_kid(a, b):
    """Unbiased MMD^2 written out pair by pair, with scikit-learn's polynomial kernel."""
    d = a.shape[1]
    kxx = polynomial_kernel(a, a, degree=3, gamma=1 / d, coef0=1)
    kyy = polynomial_kernel(b, b, degree=3, gamma=1 / d, coef0=1)
    kxy = polynomial_kernel(a, b, degree=3, gamma=1 / d, coef0=1)
    m, n = len(a), len(b)
    xx = sum(kxx[i, j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kyy[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return xx + yy - 2 * kxy.mean()


def test_frechet_distance_matches_the_scipy_sqrtm_formula():
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.5, 2.0):
        a = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
        b = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + shift
        assert distances.frechet_distance(a, b) == pytest.approx(_reference_fd(a, b), rel=1e-6, abs=1e-8)


def test_frechet_distance_of_known_gaussians_and_singular_covariances():
    # Two Gaussians with diagonal covariances: FD = |mu1-mu2|^2 + sum (s1 - s2)^2.
    fd = distances.frechet_from_stats(np.zeros(3), np.diag([1.0, 4.0, 9.0]), np.ones(3), np.diag([4.0, 4.0, 1.0]))
    assert fd == pytest.approx(3 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2)
    # Fewer samples than dimensions: still finite, real and about 0 for a set against itself.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(10, 40))
    assert distances.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(distances.frechet_distance(a, rng.normal(size=(12, 40))))


def test_kid_matches_the_pairwise_definition():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(25, 5)) + 0.7
    assert distances.kernel_inception_distance(a, b) == pytest.approx(_reference_kid(a, b))
    # Unbiased: same-distribution samples average out near 0, a shift is far above it.
    same = [distances.kernel_inception_distance(rng.normal(size=(60, 5)), rng.normal(size=(60, 5)))
            for _ in range(30)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    assert distances.kernel_inception_distance(a, b) > 10 * np.std(same)


def test_matched_sample_draws_whole_subjects_up_to_n():
    ids = np.array(["a"] * 3 + ["b"] * 5 + ["c"] * 2 + ["d"] * 4)
    groups = distances.subject_groups(ids)
    assert [len(g) for g in groups] == [3, 5, 2, 4]
    rng = np.random.default_rng(3)
    idx = distances.matched_sample(groups, 9, rng, replace=False)
    assert len(idx) == 9 and len(set(idx.tolist())) == 9
    # Every subject but the last one drawn is complete.
    drawn = [s for s in dict.fromkeys(ids[idx])]
    for s in drawn[:-1]:
        assert (ids[idx] == s).sum() == (ids == s).sum()
    assert len(distances.matched_sample(groups, 100, rng, replace=False)) == len(ids)  # runs out of subjects
    boot = distances.matched_sample(groups, 30, rng, replace=True)
    assert len(boot) == 30


def test_percentile_interval_drops_undefined_replicates():
    lo, hi = distances.percentile_interval([np.nan, *range(101)])
    assert (lo, hi) == pytest.approx((2.5, 97.5))


def test_weighted_replicates_equal_fd_and_kid_of_the_drawn_samples():
    """The bootstrap computes FD and KID from per-row multiplicities; each must equal the direct formula (scipy
    sqrtm FD, pair-by-pair KID) on the sample it stands for, copies of a row included."""
    from auditors.fidelity.feature_distance import _Reference

    rng = np.random.default_rng(3)
    train = rng.normal(size=(150, 6)) * [1, 2, 1, 0.5, 1, 3] + 0.3
    x = rng.normal(size=(40, 6)) * 1.3 + 2.0
    groups = distances.subject_groups(np.repeat(np.arange(10), 4))
    draws = [distances.matched_sample(groups, 30, rng, replace=True) for _ in range(4)]
    weights = distances.multiplicities(draws, len(x))
    assert (weights.sum(axis=1) == 30).all() and (weights > 1).any()
    ref = _Reference(train, np.random.default_rng(0))
    fd, kid = ref.replicates(x, weights, groups)
    by_row = ref.replicates(x, weights)  # without the subject groups: every row summed on its own
    assert by_row[0] == pytest.approx(fd, rel=1e-10) and by_row[1] == pytest.approx(kid, rel=1e-10)
    for k, idx in enumerate(draws):
        assert fd[k] == pytest.approx(_reference_fd(x[idx], train), rel=1e-8)
        assert fd[k] == pytest.approx(ref.fd(x[idx]), rel=1e-10)
        assert kid[k] == pytest.approx(_reference_kid(x[idx], ref.kid_sample), rel=1e-8, abs=1e-12)
        assert kid[k] == pytest.approx(ref.kid(x[idx]), rel=1e-10, abs=1e-14)
    blocked = distances.weighted_kid(x, weights, ref.kid_sample, block=7)  # blocks that do not divide the rows
    assert blocked == pytest.approx(kid, rel=1e-12)
    assert len(ref.replicates(x, distances.multiplicities([], len(x)))[0]) == 0


def test_synthetic_parts_are_disjoint_whole_subject_samples():
    from auditors.fidelity.feature_distance import MAX_SYNTHETIC_PARTS, part_count, synthetic_parts

    groups = [np.arange(3 * k, 3 * k + 3) for k in range(10)]  # 10 subjects of 3 slices
    parts = synthetic_parts(groups, 6, np.arange(10), 3)
    assert parts == [[0, 1], [2, 3], [4, 5]]  # whole subjects, disjoint, at least 6 slices each
    assert synthetic_parts(groups, 7, np.arange(10)[::-1], 5) == [[9, 8, 7], [6, 5, 4], [3, 2, 1]]
    assert part_count(groups, 6) == min(MAX_SYNTHETIC_PARTS, 5) and part_count(groups, 30) == 1
    assert part_count(groups, 40) == 1  # smaller than the holdout: one part, as before


def _cohort(prefix: str, n: int, per: int):
    """n patients of `per` blank slices each: the ids and splits compare_in_space reads, with features patched in."""
    from cmri_release.core.sliceset import SliceSet

    ids = np.repeat([f"{prefix}{i}" for i in range(n)], per)
    k = len(ids)
    return SliceSet(images=np.zeros((k, 4, 4)), labels=np.zeros((k, 4, 4), np.uint8), subject_ids=ids,
                    vendors=["A"] * k, phases=["ED"] * k, slice_pos=np.zeros(k), slice_index=np.zeros(k),
                    has_label=np.ones(k, bool), spacing_mm=1.0)


def _gaussian_audit(monkeypatch, n_syn: int, seed: int, shift: float = 0.0):
    """compare_in_space on Gaussian 'features' (16 slices per patient, 8 dimensions), no network."""
    from auditors.base import AuditContext
    from auditors.fidelity import feature_distance

    rng = np.random.default_rng(seed)
    per = 16

    def features(n, offset=0.0):  # a patient effect plus slice noise
        return (np.repeat(rng.normal(size=(n, 8)), per, axis=0) + rng.normal(size=(n * per, 8)) + offset)

    feats = {"train": features(60), "holdout": features(40), "synthetic": features(n_syn, shift)}
    monkeypatch.setattr(feature_distance, "standardised", lambda ctx, space: feats)
    ctx = AuditContext(train=_cohort("t", 60, per), holdout=_cohort("h", 40, per),
                       synthetic=_cohort("s", n_syn, per), seed=seed, quiet=True)
    return feature_distance.compare_in_space(ctx, "segmenter", 100)["fd"]


def test_a_larger_synthetic_set_narrows_the_fd_excess_and_keeps_its_bias_matched(monkeypatch):
    widths, estimates = {40: [], 160: []}, {40: [], 160: []}
    for seed in range(8):
        for n_syn in (40, 160):
            fd = _gaussian_audit(monkeypatch, n_syn, seed)
            lo, hi = fd["excess_bounds"]
            assert lo <= fd["excess"] <= hi
            widths[n_syn].append(hi - lo)
            estimates[n_syn].append(fd["excess"])
    assert np.mean(widths[160]) < 0.95 * np.mean(widths[40])  # 4 parts average out the synthetic side's noise
    # FD at a matched slice count: the honest excess stays centred (using all 160 patients at once would not)
    assert abs(np.mean(estimates[160])) < 0.5 * np.std(estimates[40])
    shifted = _gaussian_audit(monkeypatch, 160, 0, shift=0.5)
    assert shifted["excess_bounds"][0] > 0  # a real difference is still shown


def _networks_audit(monkeypatch, networks: int, sensitivity: dict[int, float], seed: int = 0):
    """compare_in_space on Gaussian 'features' whose synthetic fault (a shift) each network sees to its own extent:
    network j (the audit context seeded seed + j NETWORK_SEED_STEP) sees `sensitivity[j]`."""
    from auditors.base import AuditContext
    from auditors.fidelity import feature_distance

    rng = np.random.default_rng(seed)
    per = 16

    def features(n):
        return np.repeat(rng.normal(size=(n, 8)), per, axis=0) + rng.normal(size=(n * per, 8))

    base = {"train": features(60), "holdout": features(40), "synthetic": features(40)}

    def standardised(ctx, space):
        j = (ctx.seed - seed) // feature_distance.NETWORK_SEED_STEP
        return {**base, "synthetic": base["synthetic"] + sensitivity[j]}

    monkeypatch.setattr(feature_distance, "standardised", standardised)
    ctx = AuditContext(train=_cohort("t", 60, per), holdout=_cohort("h", 40, per),
                       synthetic=_cohort("s", 40, per), seed=seed, quiet=True)
    return feature_distance.compare_in_space(ctx, "segmenter", 200, networks)["fd"]


def test_networks_that_agree_give_the_single_network_figures(monkeypatch):
    one = _networks_audit(monkeypatch, 1, {0: 0.3})
    three = _networks_audit(monkeypatch, 3, {0: 0.3, 1: 0.3, 2: 0.3})
    assert three["excess_per_network"] == pytest.approx([one["excess"]] * 3, abs=1e-12)
    assert three["excess_network_se"] == 0.0
    assert three["excess"] == pytest.approx(one["excess"], abs=1e-12)
    assert three["excess_bounds"] == pytest.approx(one["excess_bounds"], abs=1e-12)


def test_networks_that_disagree_average_and_widen_the_interval(monkeypatch):
    one = _networks_audit(monkeypatch, 1, {0: 0.3})
    three = _networks_audit(monkeypatch, 3, {0: 0.3, 1: 0.1, 2: 0.5})
    per = three["excess_per_network"]
    assert per[0] == pytest.approx(one["excess"], abs=1e-12)  # network 0 is the audit's own, on the same samples
    assert per[1] < per[0] < per[2]  # the fault seen less, then more
    assert three["excess"] == pytest.approx(np.mean(per), abs=1e-12)
    assert three["excess_network_se"] == pytest.approx(np.std(per, ddof=1) / np.sqrt(3), rel=1e-9)
    lo1, hi1 = one["excess_bounds"]
    lo3, hi3 = three["excess_bounds"]
    assert lo3 <= three["excess"] <= hi3
    assert hi3 - lo3 > (hi1 - lo1) + 2 * three["excess_network_se"]  # the networks' spread is in the interval


def test_the_networks_option_is_declared_with_its_range():
    from auditors.base import OPTIONS
    import auditors.fidelity.feature_distance  # noqa: F401  (registers the option)

    option = OPTIONS["fidelity_networks"]
    assert option.default == 3 and option.low == 1 and option.high == 10


def test_a_fault_every_network_shows_stays_shown_however_much_they_disagree_on_its_size(monkeypatch):
    one = _networks_audit(monkeypatch, 1, {0: 1.0})  # the smallest of the three views of the fault
    three = _networks_audit(monkeypatch, 3, {0: 3.0, 1: 1.0, 2: 6.0})
    per = three["excess_per_network"]
    se = three["excess_network_se"]
    assert min(per) > 0.5 and se > 0.3 * min(per)  # large everywhere, sizes far apart
    lo, hi = three["excess_bounds"]
    assert one["excess_bounds"][0] > 0.03
    assert lo >= one["excess_bounds"][0] - 1e-12 and lo <= three["excess"] <= hi  # at least the weakest network's
