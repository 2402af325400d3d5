import numpy as np
import pytest

from cmri_release.preprocess import PreprocessConfig, cohort_to_slices
from cmri_release.core.sliceset import SliceSet


def test_subject_selection_keeps_every_slice_of_a_patient(tiny_cohort):
    ss = cohort_to_slices(tiny_cohort, PreprocessConfig(size=32))
    part = ss.for_subjects(["s01", "s03"])
    assert part.subjects == ["s01", "s03"]
    assert len(part) == int(np.isin(ss.subject_ids, ["s01", "s03"]).sum())
    assert set(part.subject_meta) == {"s01", "s03"}
    whole = SliceSet.concat([part, ss.for_subjects(["s00"])])
    assert whole.subjects == ["s01", "s03", "s00"]
    codes, subjects = whole.subject_codes()
    assert [subjects[c] for c in codes] == whole.subject_ids.tolist()


def test_shape_and_label_validation():
    with pytest.raises(ValueError):
        SliceSet(images=np.zeros((2, 4, 5)), labels=np.zeros((2, 4, 5)), subject_ids=["a", "a"], vendors=["A", "A"],
                 phases=["ED", "ED"], slice_pos=[0, 1], slice_index=[0, 1], has_label=[True, True], spacing_mm=1)
    with pytest.raises(Exception, match="unexpected label"):
        SliceSet(images=np.zeros((1, 4, 4)), labels=np.full((1, 4, 4), 5), subject_ids=["a"], vendors=["A"],
                 phases=["ED"], slice_pos=[0], slice_index=[0], has_label=[True], spacing_mm=1)
