import pytest

from cmri_release.core.errors import CmriError
from cmri_release.core.splits import split_subjects


def _vendors(n):
    return {f"p{i:03d}": "ABC"[i % 3] for i in range(n)}


def test_disjoint_complete_and_deterministic():
    sv = _vendors(30)
    a = split_subjects(sv, {"train": 0.6, "holdout": 0.2, "test": 0.2}, seed=1)
    b = split_subjects(sv, {"train": 0.6, "holdout": 0.2, "test": 0.2}, seed=1)
    assert a == b
    all_ids = a["train"] + a["holdout"] + a["test"]
    assert sorted(all_ids) == sorted(sv) and len(set(all_ids)) == 30
    assert (len(a["train"]), len(a["holdout"]), len(a["test"])) == (18, 6, 6)
    assert a != split_subjects(sv, {"train": 0.6, "holdout": 0.2, "test": 0.2}, seed=2)


def test_stratified_by_vendor():
    sv = _vendors(30)
    s = split_subjects(sv, {"train": 0.6, "holdout": 0.4}, seed=0)
    for vendor in "ABC":
        assert sum(sv[i] == vendor for i in s["holdout"]) == 4


def test_too_small_cohort_is_refused():
    with pytest.raises(CmriError, match="too few"):
        split_subjects(_vendors(2), {"train": 0.5, "holdout": 0.25, "test": 0.25}, seed=0)


def test_fractions_must_sum_to_one():
    with pytest.raises(CmriError):
        split_subjects(_vendors(10), {"train": 0.9, "holdout": 0.2}, seed=0)


def test_split_totals_are_the_cohorts_shares_whatever_the_vendor_sizes():
    # 84 / 83 / 83 patients per vendor: rounding each vendor alone gave 100 / 99 / 51
    sv = _vendors(250)
    s = split_subjects(sv, {"train": 0.4, "holdout": 0.4, "test": 0.2}, seed=0)
    assert (len(s["train"]), len(s["holdout"]), len(s["test"])) == (100, 100, 50)
    for vendor, size in (("A", 84), ("B", 83), ("C", 83)):
        for name, share in (("train", 0.4), ("holdout", 0.4), ("test", 0.2)):
            got = sum(sv[i] == vendor for i in s[name])
            assert abs(got - share * size) < 1  # each vendor's count is its share rounded down or up


@pytest.mark.parametrize("n,fractions", [(97, (0.5, 0.3, 0.2)), (11, (0.34, 0.33, 0.33)), (250, (0.7, 0.3)),
                                         (1001, (0.41, 0.39, 0.2))])
def test_controlled_rounding_keeps_both_margins(n, fractions):
    import random
    rnd = random.Random(n)
    sv = {f"p{i:04d}": rnd.choice("ABCDE") for i in range(n)}
    names = ["train", "holdout", "test"][:len(fractions)]
    s = split_subjects(sv, dict(zip(names, fractions)), seed=3)
    exact = [f * n for f in fractions]
    assert sum(len(v) for v in s.values()) == n
    for name, e in zip(names, exact):
        assert abs(len(s[name]) - e) < 1
        for vendor in set(sv.values()):
            size = sum(1 for v in sv.values() if v == vendor)
            got = sum(sv[i] == vendor for i in s[name])
            assert abs(got - dict(zip(names, fractions))[name] * size) < 1
