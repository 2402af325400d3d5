"""The patient-level sampler: Poisson over patients, never a patient twice in a step, one gradient per patient."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.grad_sample import GradSampleModule
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from scipy import stats
from torch import nn

from generators.dp.sampler import PatientBatches, group_grad_samples

# 7 patients with 1 to 7 slices, interleaved as a SliceSet would not guarantee order
PATIENT_OF_SLICE = np.random.default_rng(0).permutation(np.repeat(np.arange(7), np.arange(1, 8)))


def batches(k: int, q: float = 0.4, steps: int = 300, seed: int = 0) -> PatientBatches:
    sampler = UniformWithReplacementSampler(num_samples=7, sample_rate=q, steps=steps,
                                            generator=torch.Generator().manual_seed(seed))
    return PatientBatches(PATIENT_OF_SLICE, sampler, k, np.random.default_rng(seed))


@pytest.mark.parametrize("k", [1, 3])
def test_no_patient_twice_in_one_step(k):
    seen_empty = False
    for index in batches(k):
        patients = PATIENT_OF_SLICE[index]
        assert len(index) % k == 0
        groups = patients.reshape(-1, k)
        assert (groups == groups[:, :1]).all(), "a patient's k slices must be consecutive"
        assert len(set(groups[:, 0])) == len(groups), "a patient appeared twice in one step"
        seen_empty |= len(index) == 0
    assert seen_empty, "Poisson sampling must produce empty steps now and then at q=0.4 over 300 steps"


def test_patients_are_poisson_sampled_at_the_sample_rate():
    q, steps = 0.4, 300
    counts = np.zeros(7)
    sizes = []
    for index in batches(1, q, steps, seed=1):
        counts[PATIENT_OF_SLICE[index]] += 1
        sizes.append(len(index))
    # Every patient, however many slices it has, is drawn with probability q per step.
    for c in counts:
        assert stats.binomtest(int(c), steps, q).pvalue > 1e-3
    assert np.var(sizes) > 0  # variable batch sizes, not fixed-size batches


def test_a_patient_with_few_slices_repeats_only_its_own():
    for index in batches(3, q=1.0, steps=5):
        for group in index.reshape(-1, 3):
            assert len(set(PATIENT_OF_SLICE[group])) == 1


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_grouped_grad_samples_are_per_patient_gradients():
    """Against the reference: the autograd gradient of each patient's mean loss over its k slices."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.GroupNorm(1, 3), nn.SiLU(), nn.Flatten(),
                        nn.Linear(3 * 6 * 6, 2))
    k, n_patients = 3, 4
    x = torch.randn(n_patients * k, 1, 6, 6)
    target = torch.randn(n_patients * k, 2)
    reference = []
    for p in range(n_patients):
        net.zero_grad()
        rows = slice(p * k, (p + 1) * k)
        nn.functional.mse_loss(net(x[rows]), target[rows]).backward()
        reference.append([q.grad.clone() for q in net.parameters()])
    gsm = GradSampleModule(net, loss_reduction="mean")
    gsm.zero_grad()
    nn.functional.mse_loss(gsm(x), target).backward()
    params = list(net.parameters())
    group_grad_samples(params, k)
    for i, q in enumerate(params):
        assert q.grad_sample.shape == (n_patients, *q.shape)
        for p in range(n_patients):
            torch.testing.assert_close(q.grad_sample[p], reference[p][i], rtol=1e-4, atol=1e-6)


def test_sampler_and_data_must_agree_on_patients():
    sampler = UniformWithReplacementSampler(num_samples=5, sample_rate=0.5)
    with pytest.raises(ValueError, match="5 patients"):
        PatientBatches(PATIENT_OF_SLICE, sampler, 1, np.random.default_rng(0))
