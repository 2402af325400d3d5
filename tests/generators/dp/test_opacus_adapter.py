"""What generators/dp/opacus_adapter.py relies on inside Opacus, checked against the installed version: each test
names the assumption, so an upgrade that breaks one fails here first, not as a wrong epsilon or a silent slowdown."""
from __future__ import annotations

import inspect

import opacus
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.grad_sample.conv import compute_conv_grad_sample
from opacus.grad_sample.grad_sample_module import GradSampleHooks
from opacus.optimizers import DPOptimizer
from packaging.version import Version
from torch import nn

from generators.dp import opacus_adapter


def test_the_opacus_version_is_the_pinned_one():
    assert Version("1.6") <= Version(opacus.__version__) < Version("1.7"), opacus.__version__


def test_generate_noise_keeps_its_signature_and_draws_gaussian_noise():
    from opacus.optimizers.optimizer import _generate_noise

    assert list(inspect.signature(_generate_noise).parameters) == ["std", "reference", "generator", "secure_mode"]
    reference = torch.zeros(200_000, dtype=torch.float64)
    noise = opacus_adapter.gaussian_noise(2.0, reference, torch.Generator().manual_seed(0), False)
    assert noise.shape == reference.shape and noise.dtype == reference.dtype
    assert abs(float(noise.std()) - 2.0) < 0.02 and abs(float(noise.mean())) < 0.02


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # PRV at sample rate 1: a harmless log(0)
@pytest.mark.parametrize("accountant", [RDPAccountant, PRVAccountant])
def test_the_accountant_history_is_a_list_of_mechanisms_it_reads(accountant):
    acc = accountant()
    acc.step(noise_multiplier=1.0, sample_rate=0.1)
    acc.step(noise_multiplier=1.0, sample_rate=0.1)
    assert opacus_adapter.history(acc) == [(1.0, 0.1, 2)]  # consecutive equal steps merge into one entry
    fresh = accountant()
    opacus_adapter.set_history(fresh, [(1.0, 0.1, 2)])
    assert fresh.get_epsilon(1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-6)
    opacus_adapter.set_history(fresh, [(1.0, 0.1, 2), (0.8, 1.0, 1)])  # a release joins the same composition
    assert fresh.get_epsilon(1e-5) > acc.get_epsilon(1e-5)


def _dp_optimizer():
    params = [nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2, 2))]
    opt = DPOptimizer(torch.optim.SGD(params, lr=0.1), noise_multiplier=0.0, max_grad_norm=1.0,
                      expected_batch_size=4, loss_reduction="mean")
    for p in params:
        p.grad = torch.full_like(p, 8.0)
        p.grad_sample = torch.zeros((1, *p.shape))  # what accumulated_iterations counts
    return opt


def test_scale_grad_once_divides_as_opacus_does():
    ours, theirs = _dp_optimizer(), _dp_optimizer()
    assert {"scale_grad", "loss_reduction", "expected_batch_size", "params", "original_optimizer", "pre_step"} <= \
        set(dir(DPOptimizer)) | set(vars(theirs))
    assert isinstance(DPOptimizer.accumulated_iterations, property)
    assert opacus_adapter.scale_grad_once(ours) and "scale_grad" in vars(ours)
    ours.scale_grad()
    theirs.scale_grad()
    for a, b in zip(ours.params, theirs.params):
        assert torch.equal(a.grad, b.grad) and float(a.grad.flatten()[0]) == 2.0


def test_a_subclass_with_its_own_scale_grad_keeps_it():
    class Own(DPOptimizer):
        def scale_grad(self):
            pass

    opt = Own(torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=0.1), noise_multiplier=0.0, max_grad_norm=1.0,
              expected_batch_size=1)
    assert not opacus_adapter.scale_grad_once(opt) and "scale_grad" not in vars(opt)


def test_grad_samplers_are_a_class_registry_an_instance_can_override():
    assert GradSampleHooks.GRAD_SAMPLERS[nn.Conv2d] is compute_conv_grad_sample
    hooks = GradSampleHooks(nn.Sequential(nn.Conv2d(2, 2, 3)))
    try:
        def sampler(layer, activations, backprops):
            return {}

        opacus_adapter.use_grad_sampler(hooks, nn.Conv2d, sampler)
        assert hooks.GRAD_SAMPLERS[nn.Conv2d] is sampler and GradSampleHooks.GRAD_SAMPLERS[nn.Conv2d] is not sampler
        assert hooks.GRAD_SAMPLERS[nn.Linear] is GradSampleHooks.GRAD_SAMPLERS[nn.Linear]
    finally:
        hooks.cleanup()


def test_recording_follows_disable_and_enable_hooks():
    hooks = GradSampleHooks(nn.Sequential(nn.Linear(2, 2)))
    try:
        assert opacus_adapter.recording(hooks)
        hooks.disable_hooks()
        assert not opacus_adapter.recording(hooks)
        hooks.enable_hooks()
        assert opacus_adapter.recording(hooks)
    finally:
        hooks.cleanup()
