"""benchmarks/bench_flow_autoguidance.py: the guided velocity is v_bad + w (v_good - v_bad), the good model's own at
w = 1, and a guided model samples. Its AUCs are the benchmark's to report."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cmri_release.phantom import make_phantom
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices
from generators.flow import FlowMatching


@pytest.fixture(scope="module")
def models():
    slices = cohort_to_slices(make_phantom(6, seed=3), PreprocessConfig(size=16)).labelled()
    good, bad = (FlowMatching(network="tiny", steps=2) for _ in range(2))
    good.fit(slices, None, epochs=2, device="cpu", seed=0, quiet=True)
    bad.fit(slices, None, epochs=1, device="cpu", seed=1, quiet=True)
    return slices, good, bad


def test_guided_velocity_extrapolates_from_the_bad_model(load_benchmark, models):
    bench = load_benchmark("bench_flow_autoguidance")
    slices, good, bad = models
    cond = torch.nn.functional.one_hot(torch.from_numpy(slices.labels[:3].astype(np.int64)), 4).permute(0, 3, 1, 2)
    cond = cond.float()
    vendor = torch.as_tensor(good.vendor_indices(slices.vendors[:3].tolist()))
    x, t = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)), torch.full((3,), 0.4)
    with torch.no_grad():
        v_good = good.net(x, good.net.prepare(cond), vendor, t)
        v_bad = bad.net(x, bad.net.prepare(cond), vendor, t)
        assert not torch.allclose(v_good, v_bad)  # two different models, or the test shows nothing
        assert torch.allclose(bench.autoguided(good, bad, 1.0)(cond, vendor)(x, t), v_good)
        guided = bench.autoguided(good, bad, 2.5)(cond, vendor)(x, t)
    assert torch.allclose(guided, v_bad + 2.5 * (v_good - v_bad), atol=1e-6)


def test_a_guided_model_samples_finite_slices(load_benchmark, models):
    from generators.synthesis import synthesize

    bench = load_benchmark("bench_flow_autoguidance")
    _, good, bad = models
    good._velocity = bench.autoguided(good, bad, 1.5)
    syn = synthesize(good, 2, seed=0)
    assert syn.images.shape[1:] == (16, 16) and np.isfinite(syn.images).all()
