"""Skipping the summed weight gradients DP-SGD discards: identical per-sample gradients and DP updates, and the layers'
own forward everywhere else (public losses, copies, after a failed step, after the session)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from opacus.grad_sample.grad_sample_module import GradSampleHooks
from opacus.optimizers import DPOptimizer
from torch import nn

from generators.base import DPConfig
from generators.dp import PrivateTraining, open_account
from generators.dp.summed_grads import SkipSummedGrads
from generators.flow import FlowMatching
from generators.training import Batch, Objective, SliceTensors, TrainSettings

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook", "ignore:Secure RNG turned off")


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 2)).train()


def backward(net, x, skip=None, active=True):
    net.zero_grad(set_to_none=True)
    for p in net.parameters():
        p.grad_sample = None
    if skip is not None and active:
        with skip.forward_pass():
            out = net(x)
    else:
        out = net(x)
    out.pow(2).sum(1).mean().backward()
    return [p.grad_sample.clone() for p in net.parameters()], [p.grad for p in net.parameters()]


def test_per_sample_gradients_are_bit_identical_and_no_summed_gradient_is_computed():
    x = torch.randn(4, 3, 6, 6)
    net = small_net()
    hooks = GradSampleHooks(net, loss_reduction="mean")
    plain_samples, plain_summed = backward(net, x)
    skip = SkipSummedGrads([net], hooks)
    samples, summed = backward(net, x, skip)
    assert all(torch.equal(a, b) for a, b in zip(samples, plain_samples))
    assert all(g is None for g in summed) and all(g is not None for g in plain_summed)
    # Outside the private forward pass, and with Opacus' hooks off (a public loss), the layers are their own.
    assert all(g is not None for g in backward(net, x, skip, active=False)[1])
    hooks.disable_hooks()
    net.zero_grad(set_to_none=True)
    with skip.forward_pass():
        out = net(x)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    hooks.enable_hooks()
    skip.remove()
    assert not any("forward" in m.__dict__ for m in net.modules())
    hooks.cleanup()


def test_a_failed_forward_pass_leaves_the_layers_their_own():
    net = small_net()
    hooks = GradSampleHooks(net)
    skip = SkipSummedGrads([net], hooks)
    with pytest.raises(RuntimeError):
        with skip.forward_pass():
            net(torch.randn(2, 5, 6, 6))  # wrong channel count
    assert not skip.active
    hooks.cleanup()  # e.g. a plain fit afterwards: its optimiser must find every gradient
    net.zero_grad(set_to_none=True)
    net(torch.randn(2, 3, 6, 6)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_a_copy_taken_during_the_session_runs_on_its_own_parameters():
    net = small_net()
    hooks = GradSampleHooks(net)
    skip = SkipSummedGrads([net], hooks)
    shadow = copy.deepcopy(net)  # what training.EMA does after the session has started
    for m in shadow.modules():  # the copied Opacus hooks would record the copy too; only the forwards matter here
        m._forward_hooks.clear()
        m._backward_hooks.clear()
    with torch.no_grad():
        for p in shadow.parameters():
            p.mul_(2.0)
    x = torch.randn(2, 3, 6, 6)
    with skip.forward_pass():  # where the replaced forwards act
        copied, original = shadow(x), net(x)
    with torch.no_grad():
        assert torch.allclose(copied, shadow(x)) and not torch.allclose(copied, original)
    skip.remove()
    hooks.cleanup()


def _flow_session(size=16, batch=4):
    torch.manual_seed(0)
    gen = FlowMatching(network="compact")
    gen.vendors = ["a", "b"]
    gen._build(2)
    gen.net.train()
    rng = np.random.default_rng(0)
    labels = torch.as_tensor(rng.integers(0, 4, (batch, size, size)))
    b = Batch(x=torch.rand(batch, 1, size, size) * 2 - 1,
              cond=torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float().contiguous(),
              vendor=torch.as_tensor(rng.integers(0, 2, batch)))
    for p in gen.net.parameters():  # zero-initialised modulations would hide half the layers' gradients
        nn.init.normal_(p, std=0.05)
    n = batch * 2
    data = SliceTensors(x=b.x.repeat(2, 1, 1, 1), cond=b.cond.repeat(2, 1, 1, 1), vendor=b.vendor.repeat(2),
                        patient=np.arange(n))
    objective = Objective("flow", [gen.net], gen._loss, lr=1e-3)
    session = PrivateTraining([objective], data, TrainSettings(batch_size=batch),
                              open_account(DPConfig(epsilon=10.0), n), epochs=1, seed=0)
    return gen, session, objective, b


def test_a_dp_step_updates_as_opacus_alone_would():
    """PrivateTraining (our conv sampler, summed gradients skipped, scale_grad's divisor read once) against the same
    session with Opacus' samplers, autograd's summed gradients and Opacus' scale_grad: the same clipped, averaged
    gradient, also from channels-last label maps (the layout training gives them, on which Opacus' own conv sampler
    goes wrong, so its reference runs on NCHW ones)."""
    grads = {}
    for mode in ("ours", "ours, channels-last batch", "opacus"):
        gen, session, objective, batch = _flow_session()
        if mode.endswith("channels-last batch"):  # as training.one_hot_tensor builds the label maps
            batch = Batch(x=batch.x, cond=batch.cond.to(memory_format=torch.channels_last), vendor=batch.vendor)
        optimizer = session.optimizers[0]
        if mode == "opacus":
            del session.hooks.GRAD_SAMPLERS  # back to Opacus' class-wide registry
            session.skip.remove()
            session.skip = None
            del optimizer.scale_grad  # back to DPOptimizer.scale_grad
        optimizer.noise_multiplier = 0.0  # the noise would drown any difference in the clipped sum
        optimizer.max_grad_norm = 0.2  # between the per-sample norms (0.16-0.28): some clipped, some not
        optimizer.zero_grad(set_to_none=True)
        for p in session.params:
            p.grad_sample = p.summed_grad = p.grad = None
        original = optimizer.original_optimizer.step
        optimizer.original_optimizer.step = lambda *a, **k: None  # keep the gradient, skip the update
        session.private_step(objective, optimizer, batch, torch.Generator().manual_seed(3))
        optimizer.original_optimizer.step = original
        grads[mode] = [p.grad.clone() for p in session.params]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in optimizer.grad_samples], 1).norm(dim=1)
        assert (norms > 0.2).any() and (norms < 0.2).any(), "the test must exercise clipping"
        session.close()
    for ours, ours_cl, opacus in zip(grads["ours"], grads["ours, channels-last batch"], grads["opacus"]):
        torch.testing.assert_close(ours, opacus, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours_cl, opacus, rtol=1e-5, atol=1e-6)


def test_scale_grad_divides_as_opacus_does():
    _, session, objective, batch = _flow_session()
    optimizer = session.optimizers[0]
    assert "scale_grad" in vars(optimizer), "PrivateTraining replaces Opacus' quadratic scale_grad"
    for p in session.params:
        p.grad_sample = torch.randn(3, *p.shape)
        p.grad = torch.randn(p.shape)
    before = [p.grad.clone() for p in session.params]
    optimizer.scale_grad()
    ours = [p.grad.clone() for p in session.params]
    for p, g in zip(session.params, before):
        p.grad = g.clone()
    DPOptimizer.scale_grad(optimizer)
    assert all(torch.equal(a, p.grad) for a, p in zip(ours, session.params))
    assert not torch.equal(ours[0], before[0])
    session.close()
