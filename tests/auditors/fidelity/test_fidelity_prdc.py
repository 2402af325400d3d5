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
