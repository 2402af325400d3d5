"""The DP mask generator: public basis and reference, clipped Gaussian releases, a usable MaskModel."""
from __future__ import annotations

import numpy as np
import pytest

from generators import DPConfig
from generators.dp import open_account
from generators.dp.masks import (BLOCKS, COUNT_SCALE, MEAN_CLIP, SPREAD_CLIP, clip_rows, fit_private_mask_model,
                                 public_basis, reference_vector)
from generators.masks import MaskModel, patient_vectors

pytestmark = pytest.mark.filterwarnings("ignore:Secure RNG turned off")


def test_public_basis_is_orthonormal_and_covers_every_block():
    basis, blocks, weights = public_basis()
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-12)
    assert set(blocks) == set(range(len(BLOCKS)))
    for b in range(len(BLOCKS)):
        assert weights[blocks == b].sum() == pytest.approx(1.0)


def test_reference_draws_the_textbook_heart_it_states():
    """Rendered through the mask model's own rasteriser, the reference's basal ED slice has the stated LV cavity."""
    from generators.dp import masks as dpm
    size, fov = 64, 160.0
    ref = reference_vector(fov)
    model = MaskModel()
    model.slice_range = (dpm.REF_SLICES, dpm.REF_SLICES)
    stack = model.render(ref, "unknown", size).labels
    px = fov / size
    lv_area_mm2 = (stack["ED"][0] == 3).sum() * px ** 2
    assert lv_area_mm2 == pytest.approx(np.pi * dpm.REF_LV_RADIUS_MM ** 2, rel=0.1)
    wall_area_mm2 = (stack["ED"][0] == 2).sum() * px ** 2
    outer = dpm.REF_LV_RADIUS_MM + dpm.REF_WALL_MM["ED"]
    assert wall_area_mm2 == pytest.approx(np.pi * (outer ** 2 - dpm.REF_LV_RADIUS_MM ** 2), rel=0.1)
    assert (stack["ES"][0] == 3).sum() < (stack["ED"][0] == 3).sum()
    assert len(stack["ED"]) == dpm.REF_SLICES


def test_clip_rows_bounds_each_patient():
    y = np.random.default_rng(0).normal(size=(20, 7)) * 3
    clipped = clip_rows(y, 2.0)
    assert (np.linalg.norm(clipped, axis=1) <= 2.0 + 1e-12).all()
    small = np.linalg.norm(y, axis=1) <= 2.0
    np.testing.assert_array_equal(clipped[small], y[small])


def test_released_mean_is_the_clipped_mean_plus_noise_of_the_stated_scale(toy_population):
    x, _, _ = patient_vectors(toy_population)
    account = open_account(DPConfig(epsilon=2000.0), n_patients=len(x))  # almost no noise
    model = fit_private_mask_model(toy_population, account)
    basis, _, _ = public_basis()
    ref = reference_vector(toy_population.spacing_mm * toy_population.size)
    scaling = np.ones(len(ref))
    scaling[-1] = COUNT_SCALE
    direct = ref + scaling * (basis @ clip_rows(((x - ref) / scaling) @ basis, MEAN_CLIP).mean(axis=0))
    noise_sd = account.release_noise * MEAN_CLIP / len(x)  # per coefficient
    assert np.abs(model.mean - direct).max() < 6 * noise_sd * COUNT_SCALE
    assert [r["sensitivity"] for r in account.releases] == [MEAN_CLIP, SPREAD_CLIP ** 2]
    assert account.history == [(account.release_noise, 1.0, 1)] * 2
    assert 0 < account.spent() < 2000.0


def test_dp_mask_model_samples_round_trip_and_hide_groups(toy_population):
    account = open_account(DPConfig(epsilon=3.0), n_patients=len(toy_population.subjects))
    model = fit_private_mask_model(toy_population, account)
    restored = MaskModel.from_dict(model.to_dict())
    stacks = restored.sample(3, seed=1)
    assert [s.group for s in stacks] == ["unknown"] * 3
    for s in stacks:
        assert s.labels["ED"].shape == s.labels["ES"].shape and s.labels["ED"].shape[1:] == (32, 32)
        assert set(np.unique(s.labels["ED"])) <= {0, 1, 2, 3}
    assert restored.slice_range == (6, 18)
