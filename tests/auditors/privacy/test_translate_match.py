"""Copies moved far: the overlap correlation agrees with np.corrcoef on the overlap at every translation, the
shift-tolerant spectrum space lists the sources of slices moved by 5 px where the small search's space does not,
and with the translations the memorisation auditor's `robust` view confirms training patients moved by 5 px that
every part missed before."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from auditors.base import AuditContext
from auditors.privacy.memorisation import NNMemorisation
from auditors.privacy.robust_match import candidates
from auditors.privacy.translate_match import overlap_correlation, translated_similarity
from cmri_release.core.sliceset import SliceSet


def _overlap_reference(query: np.ndarray, ref: np.ndarray, t: int) -> np.ndarray:
    """Brute force: np.corrcoef of the query's pixel (y + dy, x + dx) with the reference's (y, x) over the overlap,
    for (dy, dx) in [-t, t]^2 row-major; 0 where either side is flat."""
    h, w = ref.shape
    out = []
    for dy in range(-t, t + 1):
        for dx in range(-t, t + 1):
            ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
            r = ref[ys, xs].ravel()
            q = query[ys.start + dy:ys.stop + dy, xs.start + dx:xs.stop + dx].ravel()
            out.append(0.0 if np.ptp(q) == 0 or np.ptp(r) == 0 else np.corrcoef(q, r)[0, 1])
    return np.array(out)


def test_overlap_correlation_is_corrcoef_on_the_overlap_at_every_translation():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(3, 12, 12))
    refs = rng.normal(size=(3, 2, 12, 12))
    refs[1, 1] = np.roll(queries[1], (2, -3), axis=(0, 1)) * 2.0 + 5.0  # a circular move, gain and offset
    refs[2, 0, :, :] = 0.7  # a flat reference
    got = overlap_correlation(torch.from_numpy(queries), torch.from_numpy(refs), 3).numpy()
    assert got.shape == (3, 2, 49)
    for b in range(3):
        for k in range(2):
            assert np.allclose(got[b, k], _overlap_reference(queries[b], refs[b, k], 3), atol=1e-5)
    # the copy moved by (2, -3): the query's (y - 2, x + 3) is the reference's (y, x), on the overlap exactly 1
    assert got[1, 1].reshape(7, 7)[3 - 2, 3 + 3] == pytest.approx(1.0, abs=1e-6)
    assert np.all(got[2, 0] == 0.0)


def _moved(images: np.ndarray, dy: float, dx: float) -> np.ndarray:
    return np.stack([ndimage.shift(x, (dy, dx), order=1, mode="nearest") for x in images]).astype(np.float32)


def test_slices_moved_by_five_px_are_found_with_their_sources_and_strangers_are_not(blobs):
    s = blobs(12, slices=4, size=32, seed=3, noise=0.05)
    codes, _ = s.subject_codes()
    copies = _moved(s.images[:16], 5, -4)  # the first 4 patients, moved
    strangers = blobs(4, slices=4, size=32, seed=4, noise=0.05).images
    queries, q_codes = np.concatenate([copies, strangers]), np.repeat(np.arange(8), 4)
    near = candidates(queries, q_codes, s.images, codes, margin=0, window="tukey")
    assert all(i in near[i] for i in range(16))  # each copy's source slice is a candidate
    small_space = candidates(queries, q_codes, s.images, codes)
    assert np.mean([i in small_space[i] for i in range(16)]) < 0.9  # the central Hann crop's space misses some
    score, source = translated_similarity(queries, s.images, near, max_translation=8)
    assert np.all(score[:16] > 0.999) and np.array_equal(source[:16], np.arange(16))
    assert score[16:].max() < 0.9
    with pytest.raises(ValueError, match="max_translation"):
        translated_similarity(queries, s.images, near, max_translation=9)


FAST = dict(copy_registration=False, copy_warp=False, audit_masks=False, feature_spaces=["pixels"], pixel_size=16)


def _audit(train, holdout, synthetic, **options):
    ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0, quiet=True, options=options)
    result = NNMemorisation().run(ctx)
    return {c.name: c for c in result.checks}, result


def _moved_patients(train: SliceSet, n: int) -> SliceSet:
    source = train.for_subjects(train.subjects[:n])
    return SliceSet(images=_moved(source.images, 5, -4), labels=np.stack(
        [ndimage.shift(x, (5, -4), order=0, mode="nearest") for x in source.labels]).astype(np.uint8),
        subject_ids=np.char.add("moved-", source.subject_ids), vendors=source.vendors, phases=source.phases,
        slice_pos=source.slice_pos, slice_index=source.slice_index, has_label=source.has_label,
        spacing_mm=source.spacing_mm)


def test_training_patients_moved_by_five_px_are_confirmed_by_the_robust_view(phantom_slices, part_alone_confirms):
    """Three training patients moved by (5, -4) px among 24 new patients: without the translations nothing is
    confirmed; with them the release fails on the three and on nothing else."""
    train, holdout, new = phantom_slices
    moved = _moved_patients(train, 3)
    synthetic = SliceSet.concat([new.for_subjects(new.subjects[:24]), moved])
    part_alone_confirms(_audit, train, holdout, synthetic, set(moved.subjects), "robust",
                        {"copy_max_translation": 0}, 3, **FAST)
