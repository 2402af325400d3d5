"""benchmarks/bench_generator_realism.py: the noise top-up restores what it says, and the discriminator helper tells
smoothed slices from real ones but not real from real. AUCs of trained generators are the benchmark's to report."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import ndimage

from cmri_release.phantom import make_phantom
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_generator_realism")


@pytest.fixture(scope="module")
def splits():
    slices = cohort_to_slices(make_phantom(24, seed=5), PreprocessConfig(size=32)).labelled()
    ids = slices.subjects
    return slices.for_subjects(ids[0::2]), slices.for_subjects(ids[1::2])


def _smoothed(slices, sigma=0.8):
    out = copy.copy(slices)
    out.images = ndimage.gaussian_filter(slices.images, (0, sigma, sigma)).astype(slices.images.dtype)
    return out


def test_noise_top_up_restores_the_blood_pool_residual(bench, splits):
    train, other = splits
    smooth = _smoothed(other)
    topped = bench.noise_top_up(train, smooth)
    for vendor in np.unique(other.vendors):
        target = bench._blood_residual_var(train, vendor)
        assert bench._blood_residual_var(smooth, vendor) < 0.6 * target
        assert bench._blood_residual_var(topped, vendor) == pytest.approx(target, rel=0.25)


def test_discriminator_sees_smoothing_not_real_patients(bench, splits):
    train, other = splits
    half = other.subjects
    a, b = other.for_subjects(half[0::2]), other.for_subjects(half[1::2])
    assert bench.discriminator_auc(train, a, _smoothed(b))["auc"] > 0.9
    assert bench.discriminator_auc(train, a, b)["auc"] < 0.8
