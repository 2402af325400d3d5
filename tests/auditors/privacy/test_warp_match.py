"""The deformable copy search: a smooth warp is undone, the original patient is found, and the `warped` part of the
memorisation auditor confirms elastically warped copies that every other part misses."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from auditors.base import AuditContext, Verdict
from auditors.privacy.memorisation import NNMemorisation
from auditors.privacy.warp_match import (candidate_patients, registered_correlation, representative_slices,
                                         warped_similarity)
from cmri_release.core.sliceset import SliceSet

# the search for copies turned and moved (translate_match.py): off where a test isolates another part
UNTURNED = {"copy_translation_max_rotation": 0.0, "copy_max_zoom": 1.0}  # the translation search moves only


def _warp(images: np.ndarray, labels: np.ndarray, rms_px: float, smooth_px: float, seed: int):
    """Each slice under its own smooth random displacement field of `rms_px` root-mean-square length."""
    rng = np.random.default_rng(seed)
    n, h, w = images.shape
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out_i, out_l = np.empty_like(images), np.empty_like(labels)
    for k in range(n):
        d = np.stack([ndimage.gaussian_filter(rng.standard_normal((h, w)), smooth_px, mode="wrap") for _ in "yx"])
        d *= rms_px / np.sqrt((d ** 2).sum(axis=0).mean())
        out_i[k] = ndimage.map_coordinates(images[k], [ii + d[0], jj + d[1]], order=1, mode="nearest")
        out_l[k] = ndimage.map_coordinates(labels[k], [ii + d[0], jj + d[1]], order=0, mode="nearest")
    return out_i, out_l


def _warped_copies(source: SliceSet, rms_px: float, smooth_px: float = 4.0, seed: int = 7) -> SliceSet:
    images, labels = _warp(source.images, source.labels, rms_px, smooth_px, seed)
    return SliceSet(images=images.astype(np.float32), labels=labels.astype(np.uint8),
                    subject_ids=np.char.add("w-", source.subject_ids), vendors=source.vendors, phases=source.phases,
                    slice_pos=source.slice_pos, slice_index=source.slice_index, has_label=source.has_label,
                    spacing_mm=source.spacing_mm)


def _split(s: SliceSet):
    return s.images, s.subject_codes()[0], s.phases, s.slice_pos


def _fine_pearson(a, b):
    """Pearson correlation of the fine detail (minus a 0.7-px blur) over the central crop."""
    a, b = (x - ndimage.gaussian_filter(x, 0.7, mode="nearest") for x in (a, b))
    return float(np.corrcoef(a[3:-3, 3:-3].ravel(), b[3:-3, 3:-3].ravel())[0, 1])


def test_the_registration_brings_a_warped_copys_fine_detail_back(phantom_slices):
    train, _, new = phantom_slices
    originals = train.images[:24]
    warped, _ = _warp(originals, train.labels[:24], 1.5, 4.0, seed=1)
    plain = np.array([_fine_pearson(a, b) for a, b in zip(warped, originals)])
    registered = registered_correlation(warped, originals)
    assert np.all(registered >= plain - 1e-6) and np.median(registered) > 0.9 and np.median(plain) < 0.5, (
        np.median(plain), np.median(registered))
    np.testing.assert_allclose(registered_correlation(originals, originals), 1.0, atol=1e-6)
    # other patients' slices: their anatomy is aligned, their texture and noise are their own
    strangers = registered_correlation(new.images[:24], originals)
    assert np.median(strangers) < np.median(registered) - 0.1, (np.median(strangers), np.median(registered))


def test_representative_slices_are_end_diastolic_and_nearest_the_positions():
    phases = np.array(["ES", "ED", "ED", "ED", "ES", "ED"])
    positions = np.array([0.25, 0.0, 0.3, 0.9, 0.5, 0.5])
    codes = np.array([0, 0, 0, 0, 1, 1])
    out = representative_slices(codes, phases, positions, 3)
    np.testing.assert_array_equal(out[0], [2, 2, 3])  # the ES slice at 0.25 is passed over
    np.testing.assert_array_equal(out[1], [5, 5, 5])
    np.testing.assert_array_equal(out[2], [-1, -1, -1])  # no slice: no representative


def test_warped_copies_find_their_own_patient_first(phantom_slices):
    train, _, _ = phantom_slices
    source = train.for_subjects(train.subjects[:6])
    copies = _warped_copies(source, 2.0)
    chosen = candidate_patients(_split(copies), _split(train), 2)
    train_of = {s: i for i, s in enumerate(train.subject_codes()[1])}
    assert [int(c[0]) for c in chosen] == [train_of[s] for s in source.subjects]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2 queries but 3 references"):
        registered_correlation(np.zeros((2, 8, 8)), np.zeros((3, 8, 8)))
    codes, phases, pos = np.zeros(2, int), np.array(["ED", "ED"]), np.zeros(2)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        warped_similarity((np.zeros((2, 8)), codes, phases, pos), (np.zeros((2, 8, 8)), codes, phases, pos))


def _audit(train, holdout, synthetic, **options):
    ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0, quiet=True, options=options)
    result = NNMemorisation().run(ctx)
    return {c.name: c for c in result.checks}, result


@pytest.mark.slow  # default run under 15 min on a slow 2-core machine; CI runs it
def test_elastically_warped_copies_are_confirmed_by_the_warped_part_only(phantom_slices, part_alone_confirms):
    """Six training patients bent by a smooth warp of 1.5 px rms (image and label maps), among 24 new patients: no
    other part confirms any of them; the deformable search confirms them (5 of 6 at least, a 12-patient holdout's
    bar), and nothing else."""
    train, holdout, new = phantom_slices
    copies = _warped_copies(train.for_subjects(train.subjects[:6]), 1.5)
    synthetic = SliceSet.concat([new.for_subjects(new.subjects[:24]), copies])
    part_alone_confirms(_audit, train, holdout, synthetic, set(copies.subjects), "warped", {"copy_warp": False}, 5,
                        copy_registration=False, **UNTURNED, feature_spaces=["pixels"], pixel_size=16)


def test_new_patients_are_not_confirmed_by_the_warped_part(phantom_slices):
    train, holdout, new = phantom_slices
    checks, result = _audit(train, holdout, new, copy_registration=False, feature_spaces=["pixels"], pixel_size=16)
    assert result.metrics["near_copies"]["warped"]["confirmed"] == []
    assert checks["privacy.confirmed_copies"].verdict is Verdict.PASS
