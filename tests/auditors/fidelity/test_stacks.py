"""The stacks checks: stacks reversed, shuffled or assembled from other patients' slices are atypical; real new
patients are not."""
import numpy as np
import pytest

from auditors.base import AuditContext, CohortSizes, Verdict
from auditors.fidelity.degradations import stack_fault
from auditors.fidelity.stacks import (COHERENCE_CHECK, GRID, PROFILE_CHECK, STRUCTURES, StacksAuditor,
                                      profile_correlation, stack_coherence, stack_profiles)
from cmri_release.core.sliceset import SliceSet


def audit(train, holdout, synthetic, seed=0, **thresholds):
    return StacksAuditor().run(AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=seed,
                                                  quiet=True, thresholds=thresholds))


def test_correlation_matches_numpy_and_a_flat_profile_is_least_typical():
    rng = np.random.default_rng(0)
    profiles, reference = rng.normal(size=(5, 48)), rng.normal(size=48)
    profiles[3] = np.nan
    profiles[4] = 0.7  # no order at all
    corr = profile_correlation(profiles, reference)
    for i in range(3):
        assert corr[i] == pytest.approx(np.corrcoef(profiles[i], reference)[0, 1], abs=1e-12)
    assert np.isnan(corr[3]) and corr[4] == -1.0


def test_profiles_read_positions_not_storage_order_and_ignore_empty_slices(heart_slices):
    cohort = heart_slices(6, seed=3)
    profiles = stack_profiles(cohort)
    assert profiles.shape == (6, 2 * len(STRUCTURES) * GRID) and np.isfinite(profiles).all()
    # base to apex in the fixture: every structure shrinks, so each curve starts at its largest
    curves = profiles.reshape(6, 2 * len(STRUCTURES), GRID)
    assert np.allclose(curves[:, :, 0], 1.0) and (np.diff(curves, axis=2) <= 1e-12).all()
    mixed = cohort.select(np.random.default_rng(0).permutation(len(cohort)))  # rows stored in another order
    by_name = dict(zip(mixed.subject_codes()[1], stack_profiles(mixed)))
    np.testing.assert_allclose(np.array([by_name[s] for s in cohort.subject_codes()[1]]), profiles)
    # an empty slice beyond the apex (as a generator may keep it) changes nothing
    n = len(cohort)
    padded = SliceSet.concat([cohort, SliceSet(
        images=cohort.images[:1], labels=np.zeros_like(cohort.labels[:1]), subject_ids=cohort.subject_ids[:1],
        vendors=cohort.vendors[:1], phases=cohort.phases[:1], slice_pos=np.array([1.3], np.float32),
        slice_index=np.array([9]), has_label=np.ones(1, bool), spacing_mm=cohort.spacing_mm)])
    assert len(padded) == n + 1
    np.testing.assert_allclose(stack_profiles(padded), profiles)


def test_reversed_and_shuffled_stacks_fail_and_are_named_fresh_patients_do_not(heart_slices):
    train, holdout = heart_slices(30, seed=1, prefix="t"), heart_slices(30, seed=2, prefix="h")
    fresh = heart_slices(30, seed=3, prefix="s")
    honest = audit(train, holdout, fresh)
    check = honest.checks[0]
    assert [c.name for c in honest.checks] == [PROFILE_CHECK, COHERENCE_CHECK]
    assert check.name == PROFILE_CHECK and check.verdict != Verdict.FAIL and check.upper < 0.3
    assert len(honest.metrics["profile"]["flagged"]) <= 2  # 1% of 30 by design; the normal tail is a fit
    for how in ("reversed", "shuffled"):
        result = audit(train, holdout, stack_fault(fresh, how))
        check = result.checks[0]
        assert check.verdict == Verdict.FAIL and check.lower > 0.8, how
        if how == "reversed":  # the images still continue from slice to slice, apex first
            assert result.checks[1].verdict != Verdict.FAIL
        assert result.figures and result.figures[0].name == "atypical_stacks"


def test_a_few_reversed_patients_are_flagged_exactly(heart_slices):
    train, holdout = heart_slices(30, seed=1, prefix="t"), heart_slices(30, seed=2, prefix="h")
    fresh = heart_slices(30, seed=3, prefix="s")
    turned = set(fresh.subjects[:4])
    result = audit(train, holdout, stack_fault(fresh, "reversed", turned))
    assert set(result.metrics["profile"]["flagged"]) == turned
    assert result.checks[0].estimate == pytest.approx(4 / 30)


def test_a_synthetic_patient_without_an_ordered_stack_counts_against_the_release(heart_slices):
    train, holdout = heart_slices(30, seed=1, prefix="t"), heart_slices(30, seed=2, prefix="h")
    fresh = heart_slices(10, seed=3, prefix="s")
    one = fresh.subjects[0]
    keep = ~((fresh.subject_ids == one) & (fresh.phases == "ES") & (fresh.slice_index > 0))  # one ES slice left
    result = audit(train, holdout, fresh.select(keep))
    assert result.metrics["profile"]["unscored"] == [one] and one in result.metrics["profile"]["flagged"]


def test_a_holdout_too_small_to_calibrate_is_inconclusive(heart_slices):
    result = audit(heart_slices(10, seed=1, prefix="t"), heart_slices(4, seed=2, prefix="h"),
                   heart_slices(20, seed=3, prefix="s"))
    check = result.checks[0]
    assert check.verdict == Verdict.INCONCLUSIVE and (check.lower, check.upper) == (0.0, 1.0)
    assert "holdout" in check.decide


def test_plan_reads_the_threshold_and_sizes():
    auditor = StacksAuditor()
    big = auditor.plan(CohortSizes(100, 100, 100), {})[PROFILE_CHECK]["honest_pass_probability"]
    small = auditor.plan(CohortSizes(100, 20, 20), {})[PROFILE_CHECK]["honest_pass_probability"]
    strict = auditor.plan(CohortSizes(100, 100, 100), {PROFILE_CHECK: 0.05})[PROFILE_CHECK]["honest_pass_probability"]
    assert big > 0.9 and small < big and strict < big


@pytest.mark.slow
def test_on_the_phantom_fresh_patients_pass_and_reversed_or_assembled_stacks_fail():
    from cmri_release.phantom import make_phantom
    from cmri_release.preprocess import PreprocessConfig, cohort_to_slices

    train, holdout, fresh = (cohort_to_slices(make_phantom(60, seed=s), PreprocessConfig(size=32))
                             for s in (401, 402, 403))
    honest = audit(train, holdout, fresh)
    profile, coherence = honest.checks
    assert profile.verdict == Verdict.PASS, profile.details
    # 60 patients are few for the coherence null's tail (it passes at 100: docs/fidelity-utility-checks.md)
    assert coherence.verdict != Verdict.FAIL and coherence.estimate <= 0.1, coherence.details
    # the phantom's ground truth: every stack is written base first, so reversing half of them flags those
    turned = set(fresh.subjects[::2])
    result = audit(train, holdout, stack_fault(fresh, "reversed", turned))
    assert result.checks[0].verdict == Verdict.FAIL and set(result.metrics["profile"]["flagged"]) == turned
    # and each patient is one body: stacks assembled from other patients' slices break from slice to slice
    result = audit(train, holdout, stack_fault(fresh, "assembled"))
    assert result.checks[1].verdict == Verdict.FAIL and result.checks[1].lower > 0.9


def test_coherence_is_the_median_neighbour_correlation_in_position_order(heart_slices):
    cohort = heart_slices(4, seed=3)
    mixed = cohort.select(np.random.default_rng(1).permutation(len(cohort)))
    codes, subjects = mixed.subject_codes()
    got = stack_coherence(mixed)
    for patient, sid in enumerate(subjects):
        pairs = []
        for phase in ("ED", "ES"):
            rows = np.flatnonzero((mixed.subject_ids == sid) & (mixed.phases == phase))
            rows = rows[np.argsort(mixed.slice_pos[rows])]
            pairs += [np.corrcoef(mixed.images[a].ravel(), mixed.images[b].ravel())[0, 1]
                      for a, b in zip(rows[:-1], rows[1:])]
        assert got[patient] == pytest.approx(np.median(pairs), abs=1e-9)


def test_stacks_assembled_from_other_patients_fail_coherence_and_are_shown(heart_slices):
    train, holdout = heart_slices(30, seed=1, prefix="t"), heart_slices(30, seed=2, prefix="h")
    fresh = heart_slices(30, seed=3, prefix="s")
    honest = audit(train, holdout, fresh).checks[1]
    assert honest.name == COHERENCE_CHECK and honest.verdict != Verdict.FAIL and honest.upper < 0.3
    result = audit(train, holdout, stack_fault(fresh, "assembled"))
    check = result.checks[1]
    assert check.verdict == Verdict.FAIL and check.lower > 0.5
    assert "incoherent_stacks" in [f.name for f in result.figures]
