import numpy as np
import pytest
import sklearn
from prdc import compute_prdc

from auditors.fidelity.prdc import prdc


@pytest.mark.parametrize("k,shift,n_real,n_fake", [(5, 0.0, 200, 200), (3, 0.5, 150, 90), (5, 2.0, 120, 160)])
def test_prdc_matches_the_authors_package(k, shift, n_real, n_fake):
    rng = np.random.default_rng(k + n_real)
    real = rng.normal(size=(n_real, 8))
    fake = rng.normal(size=(n_fake, 8)) * 1.2 + shift
    ours = prdc(real, fake, k)
    reference = compute_prdc(real, fake, k)
    for name in ("precision", "recall", "density", "coverage"):
        assert ours[name] == pytest.approx(float(reference[name]), abs=1e-12), name


def test_prdc_is_the_same_when_distances_come_in_small_chunks():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(300, 4)), rng.normal(size=(250, 4)) + 0.3
    whole = prdc(real, fake, 5)
    with sklearn.config_context(working_memory=0.05):  # 50 kB: many row chunks
        chunked = prdc(real, fake, 5)
    assert chunked == whole


def test_prdc_sees_mode_collapse_and_disjoint_sets():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 6))
    collapsed = real[:1] + rng.normal(scale=1e-3, size=(200, 6))
    out = prdc(real, collapsed, 5)
    assert out["coverage"] < 0.1 and out["precision"] == 1.0
    far = prdc(real, rng.normal(size=(200, 6)) + 50, 5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    with pytest.raises(ValueError, match="more than 5"):
        prdc(real, real[:5], 5)


def _slices(n_patients: int, per: int, prefix: str, labels=None):
    from cmri_release.core.sliceset import SliceSet

    n = n_patients * per
    return SliceSet(images=np.zeros((n, 8, 8), np.float32), labels=np.zeros((n, 8, 8), np.uint8),
                    subject_ids=np.repeat([f"{prefix}{i:03d}" for i in range(n_patients)], per),
                    vendors=np.full(n, "A"), phases=np.full(n, "ED"), slice_pos=np.zeros(n), slice_index=np.zeros(n, int),
                    has_label=np.ones(n, bool), spacing_mm=1.0)


def test_coverage_interval_holds_its_estimate_under_mode_collapse():
    """A collapsed cohort (a few patients repeated under new ids) loses little coverage when the bootstrap drops
    ids, the holdout loses more: percentile bounds of the ratio then sit above the estimate. The reported interval
    must contain its own estimate (and still fail the collapse against the 0.5 threshold)."""
    from auditors.base import AuditContext
    from auditors.fidelity.prdc_auditor import bootstrap_ratios

    rng = np.random.default_rng(0)
    per = 10
    centres = {s: rng.normal(size=(n, 6)) * 2 for s, n in (("train", 60), ("holdout", 40), ("collapsed", 4))}
    feats = {s: np.repeat(c, per, axis=0) + rng.normal(scale=0.7, size=(len(c) * per, 6)) for s, c in centres.items()}
    synthetic = np.tile(feats["collapsed"], (10, 1))  # 4 patients x 10 copies = 40 ids
    ctx = AuditContext(train=_slices(60, per, "t"), holdout=_slices(40, per, "h"), synthetic=_slices(40, per, "s"),
                       seed=0, quiet=True)
    ctx.cache["fidelity.standardised.segmenter"] = {"train": feats["train"], "holdout": feats["holdout"],
                                                    "synthetic": synthetic}
    ctx.cache["fidelity.matched"] = {"holdout": np.arange(400), "synthetic": np.arange(400)}
    out = bootstrap_ratios(ctx, "segmenter", 5, 300)
    for m in ("precision", "coverage"):
        assert out[m]["lower"] <= out[m]["estimate"] <= out[m]["upper"], (m, out[m])
    assert out["coverage"]["upper"] < 0.5  # the collapse is still shown
