"""benchmarks/bench_flow_variants.py: the informed prior holds each label's training intensities per vendor and pixel,
and the flow that starts from it trains and samples. Its AUCs are the benchmark's to report."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cmri_release.phantom import make_phantom
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_flow_variants")


def test_prior_is_each_labels_intensity_per_vendor(bench):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(40, 8, 8))
    vendors = np.array(["A"] * 20 + ["B"] * 20)
    level = {"A": np.array([0.1, 0.3, 0.5, 0.7]), "B": np.array([0.2, 0.4, 0.6, 0.9])}
    images = np.stack([level[v][lab] for v, lab in zip(vendors, labels)]).astype(np.float32)
    mean, spread = bench.informed_prior(images, labels, vendors, ["A", "B"])
    assert mean.shape == (3, 4, 8, 8)
    for vi, v in enumerate("AB"):
        for label in range(4):  # model units: 2 x intensity - 1; a constant label has no spread (floor 1e-2)
            assert torch.allclose(mean[vi, label], torch.full((8, 8), 2 * level[v][label] - 1, dtype=torch.float32),
                                  atol=1e-5)
            assert float(spread[vi, label].max()) == pytest.approx(1e-2, abs=1e-6)
    pooled = (2 * np.r_[level["A"][1], level["B"][1]] - 1).mean()
    assert float(mean[2, 1].mean()) == pytest.approx(pooled, abs=0.02)  # the last row pools the vendors


def test_informed_prior_flow_trains_and_samples_in_range(bench):
    from generators.synthesis import synthesize

    slices = cohort_to_slices(make_phantom(6, seed=3), PreprocessConfig(size=16)).labelled()
    gen = bench.InformedPriorFlow(network="tiny", steps=2, **bench.FAST)
    gen.fit(slices, None, epochs=1, device="cpu", seed=0, quiet=True)
    syn = synthesize(gen, 2, seed=0)
    assert syn.images.shape[1:] == (16, 16) and np.isfinite(syn.images).all()
    assert syn.images.min() >= 0.0 and syn.images.max() <= 1.0
    # the source is the prior read through the label map: at zero noise, each label's mean
    cond = torch.nn.functional.one_hot(torch.from_numpy(slices.labels[:4].astype(np.int64)), 4).permute(0, 3, 1, 2)
    vendor = torch.as_tensor(gen.vendor_indices(slices.vendors[:4].tolist()))
    x0 = gen._source(cond.float(), vendor, torch.zeros(4, 1, 16, 16))
    lab = slices.labels[:4].astype(np.int64)
    mean = gen._prior_mean.numpy()
    hh, ww = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    want = np.stack([mean[v][lab[i], hh, ww] for i, v in enumerate(vendor.numpy())])
    assert np.allclose(x0[:, 0].numpy(), want, atol=1e-6)


def test_haar_band_rescaling_is_orthonormal_exactly_invertible_and_whitens_the_training_bands(bench):
    """The whitened flow's filter: unit factors leave an image as it is, the bands keep its energy (orthonormal),
    inverse factors undo it; fitted on training slices, every band of the filtered images has the same spread
    (gamma 1), and the whitened flow trains and samples in range."""
    from generators.synthesis import synthesize
    from generators.training import images_to_model

    x = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    ones = [torch.ones(3)] * 3 + [torch.tensor(1.0)]
    assert torch.allclose(bench.rescale_bands(x, ones), x, atol=1e-5)
    assert float(sum((b ** 2).sum() for b in bench.haar_bands(x, 3))) == pytest.approx(float((x ** 2).sum()), rel=1e-5)
    factors = [torch.tensor([2.0, 3.0, 4.0]), torch.tensor([0.5, 0.6, 0.7]), torch.tensor([1.5, 1.0, 2.0]),
               torch.tensor(0.3)]
    back = bench.rescale_bands(bench.rescale_bands(x, factors), [1.0 / f for f in factors])
    assert torch.allclose(back, x, atol=1e-5)
    slices = cohort_to_slices(make_phantom(6, seed=3), PreprocessConfig(size=16)).labelled()
    gen = bench.WhitenedFlow(network="tiny", steps=2)
    gen.LEVELS = 2
    gen.fit(slices, None, epochs=1, device="cpu", seed=0, quiet=True)
    bands = bench.haar_bands(bench.rescale_bands(images_to_model(slices.images), gen._factors), 2)
    spreads = torch.cat([b.flatten(1).std(dim=1) for b in bands[:-1]] + [bands[-1].std()[None]])
    assert float(spreads.max() / spreads.min()) == pytest.approx(1.0, abs=1e-3)
    syn = synthesize(gen, 2, seed=0)
    assert syn.images.shape[1:] == (16, 16) and np.isfinite(syn.images).all()
