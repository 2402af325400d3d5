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
