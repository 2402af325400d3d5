"""The intensity auditor's W1 against a pre-sorted reference equals scipy's wasserstein_distance."""
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from auditors.fidelity.intensity import wasserstein_to_sorted


@pytest.mark.parametrize("seed", range(6))
def test_w1_to_a_sorted_reference_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=5000).round(2) if seed % 2 else rng.gamma(2.0, size=3000)  # odd seeds: many ties
    values = rng.normal(0.3, 1.2, size=int(rng.integers(1, 400))).round(1 + seed % 3)
    if seed == 4:
        values = np.concatenate([values, ref[:50], [ref.min() - 1, ref.max() + 1]])  # shared values, outside both ends
    expected = wasserstein_distance(values, ref)
    assert wasserstein_to_sorted(values, np.sort(ref)) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert wasserstein_to_sorted(np.sort(ref), np.sort(ref)) == pytest.approx(0.0, abs=1e-12)
    assert wasserstein_to_sorted(np.zeros(3), np.zeros(7)) == 0.0
