"""Copies blended together: the span fit agrees with least squares, explains a blend whole and a stranger's noise
not, and with it the memorisation auditor's `robust` view confirms training patients blended two by two that every
part missed before."""
from __future__ import annotations

import numpy as np
import pytest

from auditors.base import AuditContext
from auditors.privacy.blend_match import blend_similarity, fine_detail, span_correlation
from auditors.privacy.memorisation import NNMemorisation, copy_parts
from cmri_release.core.sliceset import SliceSet

# the search for copies turned and moved (translate_match.py): off where a test isolates another part
UNTURNED = {"copy_translation_max_rotation": 0.0, "copy_max_zoom": 1.0}  # the translation search moves only


def _unit(x):
    x = x - x.mean(axis=1, keepdims=True)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_span_correlation_is_the_least_squares_fit_on_the_nearest_rows():
    rng = np.random.default_rng(0)
    reference, query = _unit(rng.normal(size=(200, 64))), _unit(rng.normal(size=(30, 64)))
    score, idx = span_correlation(query, reference, k=6, chunk=7)  # several chunks
    for i in range(len(query)):
        sims = reference @ query[i]
        assert set(idx[i]) == set(np.argsort(-sims)[:6])  # the 6 nearest by inner product
        basis = reference[idx[i]].T.astype(np.float64)
        coef, *_ = np.linalg.lstsq(basis, query[i].astype(np.float64), rcond=None)
        residual = query[i] - basis @ coef
        assert score[i] == pytest.approx(np.sqrt(1.0 - residual @ residual), abs=1e-5)


def test_a_blend_is_explained_whole_and_noise_is_not():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(300, 32, 32)).astype(np.float32)
    blend = 0.5 * reference[3] + 0.3 * reference[17] + 0.2 * reference[250]
    stranger = rng.normal(size=(32, 32))
    score, parent = blend_similarity(np.stack([1.7 * blend + 0.4, stranger]), reference, k=8)
    assert score[0] == pytest.approx(1.0, abs=1e-4) and parent[0] == 3  # any gain and offset
    assert score[1] < 0.4  # the best 8 of 300 random directions in 676 dimensions explain little (about 0.28)
    assert fine_detail(reference[:2]).shape == (2, 26 * 26)


def _blends(train: SliceSet, pairs: int) -> SliceSet:
    """Training patients j and j + pairs averaged slice by slice (the first one's label maps and metadata)."""
    out = []
    for j in range(pairs):
        a, b = (train.for_subjects([train.subjects[i]]) for i in (j, j + pairs))
        n = min(len(a), len(b))
        out.append(SliceSet(images=(0.5 * a.images[:n] + 0.5 * b.images[:n]).astype(np.float32),
                            labels=a.labels[:n], subject_ids=np.array([f"blend-{j}"] * n), vendors=a.vendors[:n],
                            phases=a.phases[:n], slice_pos=a.slice_pos[:n], slice_index=a.slice_index[:n],
                            has_label=a.has_label[:n], spacing_mm=a.spacing_mm))
    return SliceSet.concat(out)


def _audit(train, holdout, synthetic, **options):
    ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0, quiet=True, options=options)
    result = NNMemorisation().run(ctx)
    return {c.name: c for c in result.checks}, result


FAST = dict(copy_registration=False, **UNTURNED, copy_warp=False, audit_masks=False, feature_spaces=["pixels"],
            pixel_size=16)


@pytest.mark.slow  # default run under 15 min on a slow 2-core machine (a faster sibling runs there)
def test_training_patients_blended_two_by_two_are_confirmed_by_the_robust_view(phantom_slices, part_alone_confirms):
    """Six training patients averaged in pairs (three blends) among 24 new patients: without the blend fit nothing
    is confirmed; with it the release fails on the three blends and on nothing else."""
    train, holdout, new = phantom_slices
    blends = _blends(train, 3)
    synthetic = SliceSet.concat([new.for_subjects(new.subjects[:24]), blends])
    part_alone_confirms(_audit, train, holdout, synthetic, set(blends.subjects), "robust", {"copy_blend": False}, 3,
                        **FAST)


def test_the_blend_fit_lifts_blends_and_leaves_new_patients_as_they_were(phantom_slices):
    """The `robust` view with the blend fit against without: the blends' scores rise to nearly 1, the new patients'
    and the holdout's (the null) stay where the whole-slice search put them."""
    train, holdout, new = phantom_slices
    synthetic = SliceSet.concat([new, _blends(train, 3)])
    robust = {}
    for on in (True, False):
        ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0, quiet=True,
                           options={**FAST, "copy_blend": on})
        robust[on] = next(p for p in copy_parts(ctx) if p.label == "robust")
    fresh = slice(0, len(new.subjects))
    assert robust[True].synthetic[len(new.subjects):].min() > 0.97
    assert robust[False].synthetic[len(new.subjects):].max() < robust[True].synthetic[len(new.subjects):].min()
    assert np.abs(robust[True].synthetic[fresh] - robust[False].synthetic[fresh]).max() < 0.01
    assert np.abs(robust[True].holdout - robust[False].holdout).max() < 0.01
