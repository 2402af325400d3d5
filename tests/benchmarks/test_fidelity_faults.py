"""benchmarks/fidelity_faults.py: each fault changes what it names and nothing else. The verdicts are the
benchmark's to report (docs/fidelity-utility-checks.md)."""
from __future__ import annotations

import numpy as np
import pytest

from cmri_release.core.labels import LV, MYO, RV
from cmri_release.phantom import make_phantom
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices


@pytest.fixture(scope="module")
def setup(load_benchmark):
    return load_benchmark("fidelity_faults"), cohort_to_slices(make_phantom(3, seed=5), PreprocessConfig(size=16))


def test_every_fault_keeps_the_cohort_whole(setup):
    bench, s = setup
    for name, fault in bench.FAULTS.items():
        out = fault(s)
        assert out.images.shape == s.images.shape and np.isfinite(out.images).all(), name
        assert (out.subject_ids == s.subject_ids).all(), name
        changed = [not np.array_equal(getattr(out, a), getattr(s, a)) for a in ("images", "labels", "vendors", "phases")]
        assert any(changed) == (name != "none"), name


def test_label_and_geometry_faults_do_what_they_say(setup):
    bench, s = setup
    swapped = bench.FAULTS["labels_lv_rv_swapped"](s)
    assert ((swapped.labels == RV) == (s.labels == LV)).all() and ((swapped.labels == MYO) == (s.labels == MYO)).all()
    flipped = bench.FAULTS["flip_lr"](s)
    assert np.array_equal(flipped.images[0], s.images[0][:, ::-1])
    assert np.array_equal(flipped.labels[0], s.labels[0][:, ::-1])
    assert set(bench.FAULTS["one_vendor_named"](s).vendors.tolist()) == {sorted(set(s.vendors.tolist()))[0]}
    assert (bench.FAULTS["phases_swapped"](s).phases != s.phases).all()
    q = bench.FAULTS["quantised8"](s)
    assert len(np.unique(q.images)) <= 8


def test_minority_faults_break_their_share_of_patients_only(setup):
    bench, s = setup
    for name in ("noise_patients10", "blank_patients10", "blur_patients20", "masks_mismatched20"):
        out = bench.FAULTS[name](s)
        broken = {sid for sid in s.subjects
                  if not (np.array_equal(out.images[s.subject_ids == sid], s.images[s.subject_ids == sid])
                          and np.array_equal(out.labels[s.subject_ids == sid], s.labels[s.subject_ids == sid]))}
        assert broken == {s.subjects[0]}, name  # a tenth or a fifth of 3 patients: at least one, the first
    blank = bench.FAULTS["blank_patients10"](s)
    assert not blank.images[s.subject_ids == s.subjects[0]].any()
