from dataclasses import replace

import numpy as np
import pytest

from cmri_release.core.errors import InputError
from cmri_release.core.labels import LV
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices, slices_to_cohort
from cmri_release.core.cohort import Cohort


def test_slices_are_cropped_around_the_heart(tiny_cohort):
    ss = cohort_to_slices(tiny_cohort, PreprocessConfig(size=32, fov_mm=96))
    assert ss.images.shape[1:] == (32, 32)
    assert ss.spacing_mm == pytest.approx(3.0)
    # each subject's ED heart centroid sits at the centre of the crop, whatever the heart's offset in the FOV
    for sid in ss.subjects:
        sel = (ss.subject_ids == sid) & (ss.phases == "ED")
        _, xs, ys = np.nonzero(ss.labels[sel])
        assert abs(xs.mean() - 15.5) < 1.0 and abs(ys.mean() - 15.5) < 1.0
    assert ss.images.min() >= 0 and ss.images.max() <= 1


def test_structure_areas_survive_resampling(tiny_cohort):
    cfg = PreprocessConfig(size=64, fov_mm=96)
    ss = cohort_to_slices(tiny_cohort, cfg)
    subj = tiny_cohort.subjects[0]
    sel = (ss.subject_ids == subj.id) & (ss.phases == "ED")
    area_mm2 = (ss.labels[sel] == LV).sum() * cfg.spacing_mm ** 2
    true_mm2 = (subj.frames["ED"].label == LV).sum() * 1.5 * 1.5
    assert area_mm2 == pytest.approx(true_mm2, rel=0.05)


def test_per_slice_metadata(tiny_cohort):
    ss = cohort_to_slices(tiny_cohort, PreprocessConfig(size=32))
    assert set(ss.phases) == {"ED", "ES"}
    assert ss.subjects == tiny_cohort.ids
    assert set(ss.vendors) == {"A", "B"}
    for sid in ss.subjects:
        pos = ss.slice_pos[(ss.subject_ids == sid) & (ss.phases == "ED")]
        assert pos.min() == 0 and pos.max() == 1


def test_round_trip_restores_intensity_scale_and_spacing(tiny_cohort):
    ss = cohort_to_slices(tiny_cohort, PreprocessConfig(size=32, fov_mm=96))
    back = slices_to_cohort(ss)
    assert back.ids == tiny_cohort.ids
    s = back.subjects[0]
    assert s.spacing == pytest.approx((3.0, 3.0, 8.0))
    lv = s.frames["ED"].image[s.frames["ED"].label == LV]
    # blood pool back near its scanner value (300) after normalise + denormalise
    assert abs(np.median(lv) - 300) < 25


def test_exported_slices_read_back_unshifted(tiny_cohort):
    """What the export writes and the audit reads back are the same pixels: an on-grid volume is not recentred
    (a sub-pixel shift would blur it and pad zeros at its edges); only its own intensity window is applied again."""
    cfg = PreprocessConfig(size=32, fov_mm=96)
    ss = cohort_to_slices(tiny_cohort, cfg)
    rng = np.random.default_rng(0)
    shifted = ss.labels.copy()
    shifted[ss.subject_ids == ss.subjects[0]] = np.roll(shifted[ss.subject_ids == ss.subjects[0]], 3, axis=1)
    ss = replace(ss, labels=shifted, images=np.clip(ss.images + rng.normal(0, 0.02, ss.images.shape), 0, 1)
                 .astype(np.float32))  # the heart off centre, as a generated label map may be
    back = cohort_to_slices(slices_to_cohort(ss), cfg)
    assert np.array_equal(back.labels, ss.labels)
    for a, b in zip(ss.images, back.images):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_zscore_option(tiny_cohort):
    ss = cohort_to_slices(tiny_cohort, PreprocessConfig(size=32, normalisation="zscore"))
    sel = ss.subject_ids == ss.subjects[0]
    assert abs(ss.images[sel].mean()) < 0.05 and abs(ss.images[sel].std() - 1) < 0.05


def test_empty_cohort_is_an_input_error():
    with pytest.raises(InputError, match="no subjects"):
        cohort_to_slices(Cohort([], source="empty-dir"))


def test_bad_config_values():
    with pytest.raises(ValueError):
        PreprocessConfig(size=4)
    with pytest.raises(ValueError):
        PreprocessConfig(normalisation="minmax")


def test_config_from_a_models_saved_preprocessing():
    saved = PreprocessConfig(size=32, normalisation="zscore").to_dict()
    assert PreprocessConfig.from_dict(saved) == PreprocessConfig(size=32, normalisation="zscore")
    # keys a later version wrote are left out; what the model does not say comes from the defaults given
    assert PreprocessConfig.from_dict({"fov_mm": 200.0, "new_key": 1}, size=48) == PreprocessConfig(size=48,
                                                                                                   fov_mm=200.0)
    assert PreprocessConfig.from_dict(None, size=16) == PreprocessConfig(size=16)


def test_stacking_refuses_phases_with_different_slices(tiny_cohort):
    """A volume holds the same slices at every frame: a SliceSet whose ES lacks a slice its ED has is refused by
    the writer with the subject named, instead of a folder the reader would refuse later."""
    ss = cohort_to_slices(tiny_cohort, PreprocessConfig(size=32, fov_mm=96, keep_empty=True))
    sid = ss.subjects[0]
    es = np.flatnonzero((ss.subject_ids == sid) & (ss.phases == "ES"))
    uneven = ss.select(np.setdiff1d(np.arange(len(ss.images)), es[:1]))
    with pytest.raises(ValueError, match=f"subject '{sid}': its phases hold different slices"):
        slices_to_cohort(uneven)
    assert len(slices_to_cohort(ss).subjects) == len(ss.subjects)  # equal stacks are written as before
