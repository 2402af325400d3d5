"""The duplicates check: synthetic patients that repeat another synthetic patient, calibrated on real new patients."""
from dataclasses import replace

import numpy as np
import pytest

from auditors.base import AuditContext, CohortSizes, Verdict
from auditors.fidelity.duplicates import CHECK, DuplicatesAuditor, group_patients, twin_scores
from cmri_release.core.sliceset import SliceSet


def repeated(cohort: SliceSet, keep: int) -> tuple[SliceSet, set[str]]:
    """The first `keep` patients, then each of them again under a new name until the cohort's size; and the names
    of every patient that has a twin (the ground truth)."""
    subjects = cohort.subjects
    parts, twins = [cohort.for_subjects(subjects[:keep])], set()
    for i in range(len(subjects) - keep):
        again = cohort.for_subjects([subjects[i % keep]])
        parts.append(replace(again, subject_ids=np.full(len(again), f"again-{i}")))
        twins |= {subjects[i % keep], f"again-{i}"}
    return SliceSet.concat(parts), twins


def audit(holdout, synthetic, seed=0, **thresholds):
    train = holdout  # the check never reads the training patients
    return DuplicatesAuditor().run(AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=seed,
                                                quiet=True, thresholds=thresholds))


@pytest.mark.parametrize("n,size", [(100, 100), (300, 100), (7, 3), (5, 100), (3, 2)])
def test_groups_partition_the_patients_in_groups_of_about_the_size(n, size):
    groups = group_patients(n, size, np.random.default_rng(0))
    together = np.sort(np.concatenate(groups))
    np.testing.assert_array_equal(together, np.arange(n))
    assert all(len(g) >= 2 for g in groups)
    assert all(abs(len(g) - min(size, n)) <= max(1, min(size, n) // 2) for g in groups)


def test_an_exact_repeat_scores_one_and_real_patients_less(heart_slices):
    cohort, twins = repeated(heart_slices(12, seed=5, prefix="p"), 9)
    codes, subjects = cohort.subject_codes()
    per_patient, slice_best, slice_match = twin_scores(cohort.images, codes, 12, np.random.default_rng(0))
    for i, name in enumerate(subjects):
        if name in twins:
            assert per_patient[i] == pytest.approx(1.0, abs=1e-5)
        else:
            assert per_patient[i] < 0.999
    # every slice's match is a slice of another patient
    assert np.all(cohort.subject_ids[slice_match] != cohort.subject_ids)
    assert np.isfinite(slice_best).all()


def test_honest_cohort_is_not_failed_and_repeats_fail_and_are_named(heart_slices):
    holdout = heart_slices(40, seed=1, prefix="h")
    honest = heart_slices(40, seed=2, prefix="s")
    result = audit(holdout, honest)
    check = result.checks[0]
    assert check.name == CHECK and check.verdict != Verdict.FAIL
    assert check.upper < 0.3 and len(result.metrics["flagged"]) <= 3  # 1% of 40 by design; the normal tail is a fit
    collapsed, twins = repeated(honest, 20)  # every patient has a twin
    result = audit(holdout, collapsed)
    check = result.checks[0]
    assert check.verdict == Verdict.FAIL and check.lower > 0.8
    assert set(result.metrics["flagged"]) <= twins and len(result.metrics["flagged"]) >= 0.9 * len(twins)
    assert result.figures and result.figures[0].name == "duplicates"


def test_a_few_repeats_are_flagged_exactly(heart_slices):
    holdout = heart_slices(40, seed=1, prefix="h")
    cohort, twins = repeated(heart_slices(40, seed=2, prefix="s"), 37)  # three patients drawn twice
    flagged = set(audit(holdout, cohort).metrics["flagged"])
    assert twins <= flagged and len(flagged - twins) <= 2


def test_more_synthetic_than_holdout_patients_are_matched_in_holdout_sized_groups(heart_slices):
    holdout = heart_slices(20, seed=1, prefix="h")
    result = audit(holdout, heart_slices(60, seed=2, prefix="s"))
    assert result.metrics["group_size"] == 20
    assert result.checks[0].verdict != Verdict.FAIL


def test_a_holdout_too_small_to_calibrate_is_inconclusive(heart_slices):
    result = audit(heart_slices(5, seed=1, prefix="h"), heart_slices(20, seed=2, prefix="s"))
    check = result.checks[0]
    assert check.verdict == Verdict.INCONCLUSIVE and (check.lower, check.upper) == (0.0, 1.0)
    assert "holdout" in check.decide


def test_plan_reads_the_threshold_and_sizes():
    auditor = DuplicatesAuditor()
    big = auditor.plan(CohortSizes(100, 100, 100), {})[CHECK]["honest_pass_probability"]
    small = auditor.plan(CohortSizes(100, 20, 20), {})[CHECK]["honest_pass_probability"]
    strict = auditor.plan(CohortSizes(100, 100, 100), {CHECK: 0.05})[CHECK]["honest_pass_probability"]
    assert big > 0.9 and small < big and strict < big
