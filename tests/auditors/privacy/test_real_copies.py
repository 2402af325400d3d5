"""Copies of holdout and test patients fail the release: every real patient the audit holds is protected."""
import numpy as np
import pytest

from auditors.base import AuditContext, CohortSizes, Verdict
from auditors.privacy.real_copies import CHECK, RealCopiesAuditor
from cmri_release.core.sliceset import SliceSet


def audit(train, holdout, synthetic, test=None):
    return RealCopiesAuditor().run(AuditContext(train=train, holdout=holdout, synthetic=synthetic, test=test, seed=0,
                                                quiet=True))


def test_new_patients_pass_and_perturbed_holdout_copies_are_named(blobs, copies):
    train, holdout = blobs(20, seed=1, prefix="t"), blobs(20, seed=2, prefix="h")
    fresh = blobs(20, seed=3, prefix="s")
    honest = audit(train, holdout, fresh).checks[0]
    assert honest.name == CHECK and honest.verdict == Verdict.PASS and honest.estimate == 0
    leaked = copies(holdout.for_subjects(holdout.subjects[:3]), prefix="leak-")
    result = audit(train, holdout, SliceSet.concat([fresh.for_subjects(fresh.subjects[:17]), leaked]))
    assert result.checks[0].verdict == Verdict.FAIL and result.checks[0].estimate == 3
    assert set(result.metrics["holdout"]["confirmed"]) == set(leaked.subjects)


def test_copies_of_training_patients_are_not_counted_here(blobs, copies):
    """Training copies are the memorisation auditor's (confirmed_copies); this check is for the other splits."""
    train, holdout = blobs(20, seed=1, prefix="t"), blobs(20, seed=2, prefix="h")
    synthetic = SliceSet.concat([blobs(17, seed=3, prefix="s"), copies(train.for_subjects(train.subjects[:3]))])
    assert audit(train, holdout, synthetic).checks[0].estimate == 0


def test_test_patients_are_protected_too(blobs, copies):
    train, holdout, test = (blobs(20, seed=s, prefix=p) for s, p in ((1, "t"), (2, "h"), (4, "x")))
    synthetic = SliceSet.concat([blobs(18, seed=5, prefix="s"), copies(test.for_subjects(test.subjects[:2]))])
    result = audit(train, holdout, synthetic, test=test)
    assert result.checks[0].verdict == Verdict.FAIL and len(result.metrics["test"]["confirmed"]) == 2
    assert result.metrics["holdout"]["confirmed"] == []


def test_too_few_training_patients_to_calibrate_is_inconclusive(blobs):
    result = audit(blobs(4, seed=1, prefix="t"), blobs(10, seed=2, prefix="h"), blobs(10, seed=3, prefix="s"))
    check = result.checks[0]
    assert check.verdict == Verdict.INCONCLUSIVE and "training patient" in check.decide


def test_plan_counts_the_real_splits():
    auditor = RealCopiesAuditor()
    one = auditor.plan(CohortSizes(100, 100, 100), {})[CHECK]["honest_pass_probability"]
    two = auditor.plan(CohortSizes(100, 100, 100, 50), {})[CHECK]["honest_pass_probability"]
    assert 0.99 < two < one < 1.0


@pytest.mark.slow
def test_on_the_phantom_the_holdout_under_new_names_fails(phantom_slices):
    from dataclasses import replace

    train, holdout, new = phantom_slices
    assert audit(train, holdout, new).checks[0].verdict == Verdict.PASS
    renamed = replace(holdout, subject_ids=np.char.add("syn-", holdout.subject_ids.astype(str)))
    result = audit(train, holdout, renamed)
    assert result.checks[0].verdict == Verdict.FAIL and result.checks[0].estimate == len(holdout.subjects)


def test_a_few_slices_of_a_holdout_patient_are_a_copy_too(blobs, slice_copies):
    """Synthetic patients with one slice in four taken verbatim from a holdout patient: their median slice is new,
    their best slice is a holdout slice; confirmed by the best-slice score only."""
    train, holdout = blobs(20, slices=8, seed=1, prefix="t"), blobs(20, slices=8, seed=2, prefix="h")
    fresh = blobs(20, slices=8, seed=3, prefix="s")
    mixed = slice_copies(fresh.for_subjects(fresh.subjects[-3:]), holdout.for_subjects(holdout.subjects[:3]),
                                4, "mix-")
    synthetic = SliceSet.concat([fresh.for_subjects(fresh.subjects[:17]), mixed])
    result = audit(train, holdout, synthetic)
    assert result.checks[0].verdict == Verdict.FAIL and result.checks[0].estimate == 3
    parts = result.metrics["holdout"]["parts"]
    assert parts["robust"]["confirmed"] == [] and set(parts["best_slice"]["confirmed"]) == set(mixed.subjects)


def test_turned_holdout_copies_are_found_by_the_registered_search(blobs):
    """Holdout patients turned by 40 degrees: beyond the small search's rotations, confirmed only when the registered
    search (`copy_registration`, default on) tries any turn, as for training copies."""
    from dataclasses import replace

    from scipy import ndimage

    train, holdout = blobs(20, slices=4, size=32, seed=1, prefix="t"), blobs(20, slices=4, size=32, seed=2, prefix="h")
    source = holdout.for_subjects(holdout.subjects[:3])
    turned = replace(source, images=np.stack([ndimage.rotate(x, 40.0, reshape=False, order=1, mode="nearest")
                                              for x in source.images]).astype(np.float32),
                     subject_ids=np.char.add("leak-", source.subject_ids.astype(str)))
    synthetic = SliceSet.concat([blobs(17, slices=4, size=32, seed=3, prefix="s"), turned])

    def run(**options):
        return RealCopiesAuditor().run(AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0,
                                                    quiet=True, options=options))

    found = run()
    assert found.checks[0].verdict == Verdict.FAIL and set(found.metrics["holdout"]["confirmed"]) == set(turned.subjects)
    assert run(copy_registration=False).checks[0].estimate == 0
