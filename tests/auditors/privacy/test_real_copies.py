"""Copies of holdout and test patients fail the release: every real patient the audit holds is protected."""
import numpy as np
import pytest

from auditors.base import AuditContext, CohortSizes, Verdict
from auditors.privacy.real_copies import CHECK, RealCopiesAuditor, _matched_patient
from cmri_release.core.sliceset import SliceSet


def audit(train, holdout, synthetic, test=None):
    return RealCopiesAuditor().run(AuditContext(train=train, holdout=holdout, synthetic=synthetic, test=test, seed=0,
                                                quiet=True))


def test_new_patients_pass_and_perturbed_holdout_copies_are_named(blobs, copies):
    train, holdout = blobs(20, seed=1, prefix="t"), blobs(20, seed=2, prefix="h")
    fresh = blobs(20, seed=3, prefix="s")
    honest = audit(train, holdout, fresh).checks[0]
    assert honest.name == CHECK and honest.verdict == Verdict.PASS and honest.estimate == 0
    assert not {"masks", "masks_centred"} & set(audit(train, holdout, fresh).metrics["parts"])  # no label map
    leaked = copies(holdout.for_subjects(holdout.subjects[:3]), prefix="leak-")
    result = audit(train, holdout, SliceSet.concat([fresh.for_subjects(fresh.subjects[:17]), leaked]))
    assert result.checks[0].verdict == Verdict.FAIL and result.checks[0].estimate == 3
    assert set(result.metrics["holdout"]["confirmed"]) == set(leaked.subjects)


def test_copies_of_training_patients_are_not_counted_here(blobs, copies):
    """Training copies are the memorisation auditor's (confirmed_copies); this check is for the other splits."""
    train, holdout = blobs(20, seed=1, prefix="t"), blobs(20, seed=2, prefix="h")
    synthetic = SliceSet.concat([blobs(17, seed=3, prefix="s"), copies(train.for_subjects(train.subjects[:3]))])
    assert audit(train, holdout, synthetic).checks[0].estimate == 0


def test_test_patients_are_protected_too_and_each_copy_is_told_its_split(blobs, copies):
    train, holdout, test = (blobs(20, seed=s, prefix=p) for s, p in ((1, "t"), (2, "h"), (4, "x")))
    from_test = copies(test.for_subjects(test.subjects[:2]), prefix="leak-x-")
    from_holdout = copies(holdout.for_subjects(holdout.subjects[:1]), prefix="leak-h-")
    synthetic = SliceSet.concat([blobs(17, seed=5, prefix="s"), from_test, from_holdout])
    result = audit(train, holdout, synthetic, test=test)
    assert result.checks[0].verdict == Verdict.FAIL and result.checks[0].estimate == 3
    assert set(result.metrics["test"]["confirmed"]) == set(from_test.subjects)
    assert result.metrics["holdout"]["confirmed"] == from_holdout.subjects
    assert result.metrics["reference_splits"] == ["holdout", "test"] and result.metrics["reference_patients"] == 40


def test_too_few_training_patients_to_calibrate_is_inconclusive(blobs):
    result = audit(blobs(4, seed=1, prefix="t"), blobs(10, seed=2, prefix="h"), blobs(10, seed=3, prefix="s"))
    check = result.checks[0]
    assert check.verdict == Verdict.INCONCLUSIVE and "training patient" in check.decide


def test_plan_counts_one_reference_whatever_the_real_splits():
    """The holdout and test patients are one reference: a test split adds patients to protect, not confirmation
    tests (each one more chance of an honest false alarm)."""
    auditor = RealCopiesAuditor()
    one = auditor.plan(CohortSizes(100, 100, 100), {})[CHECK]["honest_pass_probability"]
    two = auditor.plan(CohortSizes(100, 100, 100, 50), {})[CHECK]["honest_pass_probability"]
    assert 0.95 < two == one < 1.0
    # one confirmation test per part (three views by their median slice, the robust best slice, the masks as they
    # are and centred)
    assert RealCopiesAuditor().plan(CohortSizes(100, 100, 100), {})[CHECK]["detectable_unit"].count("6 scores")


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
    parts = result.metrics["parts"]
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


def _audit_with(train, holdout, synthetic, **options):
    return RealCopiesAuditor().run(AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0, quiet=True,
                                                options=options))


@pytest.mark.slow  # default run under 15 min on a slow 2-core machine; CI runs it
def test_warped_holdout_copies_are_found_by_the_deformable_search(phantom_slices):
    """Holdout patients bent by a smooth warp of 1.5 px rms among new patients (measured on 100 / 100 / 100 phantom
    patients: 10 such copies passed this check when it had the rigid and registered searches only): confirmed by the
    `warped` parts, and by nothing when `copy_warp` is off."""
    from test_warp_match import _warped_copies

    train, holdout, new = phantom_slices
    copies = _warped_copies(holdout.for_subjects(holdout.subjects[:4]), 1.5)
    synthetic = SliceSet.concat([new.for_subjects(new.subjects[:20]), copies])
    found = _audit_with(train, holdout, synthetic)
    parts = found.metrics["parts"]
    assert set(parts) == {"robust", "best_slice", "smoothed", "warped", "masks", "masks_centred"}
    assert found.checks[0].verdict == Verdict.FAIL
    assert set(found.metrics["holdout"]["confirmed"]) <= set(copies.subjects)  # no new patient under any view
    assert len(parts["warped"]["confirmed"]) >= 3, parts  # of 4, 3 at least: a 12-patient null's bar
    assert _audit_with(train, holdout, synthetic, copy_warp=False, audit_masks=False).checks[0].estimate == 0


@pytest.mark.slow  # default run under 15 min on a slow 2-core machine; CI runs it
def test_noisy_holdout_copies_are_found_by_the_smoothed_search(phantom_slices):
    """Holdout patients under strong white noise (sd 0.1 of the [0, 1] range): flagged by the `smoothed` parts (the
    search on slices blurred by `copy_smoothing_px`), and by nothing when it is off. A 12-patient null cannot show
    them copies at its exact bar: the check blocks as inconclusive (FAIL with the label maps)."""
    from dataclasses import replace

    train, holdout, new = phantom_slices
    rng = np.random.default_rng(7)
    source = holdout.for_subjects(holdout.subjects[:4])
    noisy = replace(source, images=(source.images + rng.normal(0.0, 0.1, source.images.shape)).astype(np.float32),
                    subject_ids=np.char.add("n-", source.subject_ids.astype(str)))
    synthetic = SliceSet.concat([new.for_subjects(new.subjects[:20]), noisy])
    found = _audit_with(train, holdout, synthetic, copy_warp=False, audit_masks=False)
    parts = found.metrics["parts"]
    flagged = set(found.metrics["confirmed"]) | set(found.metrics["unsettled"])
    assert found.checks[0].verdict != Verdict.PASS and flagged <= set(noisy.subjects)
    assert found.checks[0].estimate == len(flagged) and found.checks[0].lower == len(found.metrics["confirmed"])
    assert len(parts["smoothed"]["confirmed"] + parts["smoothed"]["unsettled"]) >= 3, parts
    images_only = dict(copy_warp=False, copy_smoothing_px=0.0)
    assert _audit_with(train, holdout, synthetic, audit_masks=False, **images_only).checks[0].estimate == 0
    # the label maps came along: the masks part confirms the copies whatever the noise on the images
    with_masks = _audit_with(train, holdout, synthetic, **images_only)
    masks = with_masks.metrics["parts"]["masks"]["confirmed"]
    assert with_masks.checks[0].verdict == Verdict.FAIL
    assert len(masks) >= 3 and set(masks) <= set(noisy.subjects), masks



def test_matched_patient_is_the_reference_patient_of_each_patients_best_slice_as_a_loop_finds_it():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 7, 60)
    codes[:7] = np.arange(7)  # every patient has a slice
    best = rng.random(60)
    best[3] = np.nan  # a slice without a score never wins
    best[codes == 5] = np.nan  # nor a patient without any
    match = rng.integers(-1, 40, 60)
    ref_codes = rng.integers(0, 9, 40)
    found = _matched_patient((best, match), codes, 7, ref_codes)
    for patient in range(7):
        rows = [i for i in np.flatnonzero(codes == patient) if not np.isnan(best[i])]
        top = max(rows, key=lambda i: best[i]) if rows else None
        want = ref_codes[match[top]] if top is not None and match[top] >= 0 else -1
        assert found[patient] == want
