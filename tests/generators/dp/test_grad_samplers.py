"""The Conv2d per-sample gradient sampler: the same gradients as Opacus' sampler and as torch.func, every path, and
installed on one session's hooks only."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from opacus.grad_sample import GradSampleModule
from opacus.grad_sample.conv import compute_conv_grad_sample
from opacus.grad_sample.grad_sample_module import GradSampleHooks
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from generators.dp import grad_samplers
from generators.dp.grad_samplers import conv2d_grad_sample, conv2d_method
from generators.dp.summed_grads import SkipSummedGrads
from generators.networks import CondUNet, preset
from generators.training import one_hot_tensor

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook")

TOL = 1e-5  # largest error allowed, relative to the largest entry of the reference per-sample gradient


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, tol: float = TOL) -> None:
    assert actual.shape == expected.shape and actual.device == expected.device, what
    scale = expected.abs().max().clamp_min(1e-12)
    err = float((actual - expected).abs().max() / scale)
    assert err <= tol, f"{what}: relative error {err:.2e}"


def func_per_sample(layer: nn.Module, x: torch.Tensor, backprops: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample gradients of <layer(x_i), backprops_i> with respect to the layer's parameters, by torch.func."""
    params = {k: v.detach() for k, v in layer.named_parameters() if v.requires_grad}

    def inner(p, xi, gi):
        return (functional_call(layer, p, (xi[None],)) * gi[None]).sum()

    return vmap(grad(inner), in_dims=(None, 0, 0))(params, x, backprops)


# (in, out, kernel, stride, padding, dilation, groups, bias, size, method on NCHW, method on channels-last)
LAYERS = [
    (16, 16, 3, 1, 1, 1, 1, True, 12, "grouped", "grouped"),  # the U-Net's residual convolutions
    (16, 8, 3, 2, 1, 1, 1, True, 16, "grouped", "unfold_nhwc"),  # its stride-2 downsampling, to 8x8
    (16, 32, 3, 1, (0, 2), 2, 2, False, 12, "grouped", "grouped"),  # groups, dilation, uneven padding, no bias
    (16, 1, 3, 1, 1, 1, 1, True, 12, "shifted", "shifted"),  # the U-Net's output layer
    (8, 3, (3, 5), 1, (1, 2), 1, 1, True, 10, "shifted", "shifted"),  # a rectangular kernel
    (4, 32, 3, 1, 1, 1, 1, True, 12, "opacus", "opacus"),  # the label-map modulations: Opacus' is faster there
    (16, 16, 3, 1, 1, 1, 1, True, 4, "opacus", "unfold_nhwc"),  # a small feature map
    (8, 12, (3, 2), (2, 1), (1, 0), (1, 2), 1, True, 9, "opacus", "unfold_nhwc"),  # strides, dilation, rectangles
    (16, 16, 3, 1, "same", 1, 1, True, 12, "opacus", "opacus"),  # string padding
]
IDS = [f"{s[-2]}-{s[-1]}-{i}" for i, s in enumerate(LAYERS)]


def make_layer(spec) -> nn.Conv2d:
    c_in, c_out, kernel, stride, padding, dilation, groups, bias = spec[:8]
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     bias=bias)


@pytest.mark.parametrize("spec", LAYERS, ids=IDS)
def test_conv_per_sample_gradients_match_opacus_and_torch_func(spec):
    torch.manual_seed(0)
    layer = make_layer(spec)
    x = torch.randn(5, spec[0], spec[8], spec[8])
    backprops = torch.randn_like(layer(x))
    assert conv2d_method(layer, x) == spec[9]
    ours = conv2d_grad_sample(layer, [x], backprops)
    opacus = compute_conv_grad_sample(layer, [x], backprops)
    reference = func_per_sample(layer, x, backprops)
    assert set(ours) == set(opacus) == {p for p in layer.parameters()}
    for name, p in layer.named_parameters():
        assert_close(ours[p], opacus[p], f"{name} vs Opacus")
        assert_close(ours[p], reference[name], f"{name} vs torch.func")


@pytest.mark.parametrize("spec", LAYERS, ids=IDS)
def test_channels_last_activations(spec):
    """What the U-Net's layers see in training. Opacus' unfold reads them through NCHW strides (wrong gradients);
    every path here, Opacus' own on a contiguous copy included, must match torch.func."""
    torch.manual_seed(2)
    layer = make_layer(spec)
    x = torch.randn(3, spec[0], spec[8], spec[8]).to(memory_format=torch.channels_last)
    backprops = torch.randn_like(layer(x)).to(memory_format=torch.channels_last)
    assert conv2d_method(layer, x) == spec[10]
    reference = func_per_sample(layer, x.contiguous(), backprops.contiguous())
    ours = conv2d_grad_sample(layer, [x], backprops)
    assert set(ours) == {p for p in layer.parameters()}
    for name, p in layer.named_parameters():
        assert_close(ours[p], reference[name], f"{name} vs torch.func")


@pytest.fixture
def cuda_fp32():
    """The GPU in full float32: with TF32 convolutions the reference itself would be off by ~1e-3."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.cuda
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("spec", LAYERS, ids=IDS)
def test_per_sample_gradients_on_cuda(spec, layout, cuda_fp32):
    torch.manual_seed(3)
    layer = make_layer(spec).to(cuda_fp32)
    x = torch.randn(4, spec[0], spec[8], spec[8], device=cuda_fp32).to(memory_format=layout)
    backprops = torch.randn_like(layer(x)).to(memory_format=layout)
    reference = func_per_sample(layer, x.contiguous(), backprops.contiguous())
    ours = conv2d_grad_sample(layer, [x], backprops)
    for name, p in layer.named_parameters():
        assert_close(ours[p], reference[name], f"{name} vs torch.func on cuda", tol=1e-4)


def test_a_frozen_weight_gets_no_per_sample_gradient():
    torch.manual_seed(1)
    layer = nn.Conv2d(16, 16, 3, padding=1)
    layer.weight.requires_grad_(False)
    x, backprops = torch.randn(3, 16, 10, 10), torch.randn(3, 16, 10, 10)
    ours = conv2d_grad_sample(layer, [x], backprops)
    assert set(ours) == {layer.bias}
    assert_close(ours[layer.bias], compute_conv_grad_sample(layer, [x], backprops)[layer.bias], "bias")


def test_an_empty_batch_gives_empty_gradients():
    layer = nn.Conv2d(16, 16, 3, padding=1)
    out = conv2d_grad_sample(layer, [torch.zeros(0, 16, 8, 8)], torch.zeros(0, 16, 8, 8))
    assert out[layer.weight].abs().sum() == 0 and out[layer.weight].shape[1:] == layer.weight.shape


def _unet_per_sample_grads(net: nn.Module, batch, *, fast: bool) -> dict[str, torch.Tensor]:
    """Per-sample gradients of the per-sample MSE through Opacus' hooks, with Opacus' samplers or ours (plus the
    skipped summed gradients, as PrivateTraining runs them)."""
    x, cond, vendor, t, target = batch
    hooks = GradSampleHooks(net, loss_reduction="mean")
    skip = None
    if fast:
        grad_samplers.install(hooks)
        skip = SkipSummedGrads([net], hooks)
    with skip.forward_pass() if skip else torch.enable_grad():
        out = net(x, cond, vendor, t)
    F.mse_loss(out, target, reduction="none").flatten(1).mean(1).mean().backward()
    result = {name: p.grad_sample.clone() for name, p in net.named_parameters()}
    summed = {name: p.grad for name, p in net.named_parameters()}
    if skip:
        skip.remove()
    hooks.cleanup()
    return result, summed


def test_compact_unet_per_sample_gradients_match_opacus_and_torch_func():
    torch.manual_seed(0)
    net = CondUNet(in_channels=1, out_channels=1, n_vendors=2, **preset("compact")).train()
    for p in net.parameters():  # the zero-initialised modulations would make half the gradients trivially equal
        nn.init.normal_(p, std=0.05)
    n, size = 4, 16
    # The label maps as training builds them (training.one_hot_tensor): channels-last, and so are the activations.
    cond = one_hot_tensor(np.random.default_rng(0).integers(0, 4, (n, size, size)))
    assert cond.is_contiguous(memory_format=torch.channels_last) and not cond.is_contiguous()
    batch = (torch.randn(n, 1, size, size), cond, torch.tensor([0, 1, 2, 1]), torch.rand(n),
             torch.randn(n, 1, size, size))
    methods = set()
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out: methods.add(conv2d_method(mod, inp[0])))
    ours, ours_summed = _unet_per_sample_grads(copy.deepcopy(net), batch, fast=True)
    assert methods == {"grouped", "shifted", "opacus", "unfold_nhwc"}, "the U-Net must exercise every path"
    # Opacus' own sampler is right on NCHW activations only (its unfold assumes NCHW strides).
    contiguous = (batch[0], cond.contiguous(), *batch[2:])
    opacus, opacus_summed = _unet_per_sample_grads(copy.deepcopy(net), contiguous, fast=False)

    x, cond, vendor, t, target = contiguous
    params = {k: v.detach() for k, v in net.named_parameters()}

    def per_sample_loss(p, xi, ci, vi, ti, yi):
        out = functional_call(net, p, (xi[None], ci[None], vi[None], ti[None]))
        return F.mse_loss(out, yi[None])

    reference = vmap(grad(per_sample_loss), in_dims=(None, 0, 0, 0, 0, 0))(params, x, cond, vendor, t, target)
    assert set(ours) == set(reference)
    for name in reference:
        assert_close(ours[name], opacus[name], f"{name} vs Opacus")
        assert_close(ours[name], reference[name], f"{name} vs torch.func")
    # The summed gradients DP-SGD discards were not computed for convolutions and linear layers.
    for name, p in net.named_parameters():
        layer = net.get_submodule(name.rsplit(".", 1)[0])
        skipped = type(layer) in (nn.Conv2d, nn.Linear)
        assert (ours_summed[name] is None) == skipped, name
        assert opacus_summed[name] is not None, name


def test_the_sampler_is_installed_on_one_session_only():
    a, b = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1)), nn.Sequential(nn.Conv2d(16, 16, 3, padding=1))
    hooks_a, hooks_b = GradSampleHooks(a), GradSampleHooks(b)
    grad_samplers.install(hooks_a)
    assert hooks_a.GRAD_SAMPLERS[nn.Conv2d] is conv2d_grad_sample
    # Opacus' registry and every other user keep Opacus' sampler.
    assert GradSampleHooks.GRAD_SAMPLERS[nn.Conv2d] is compute_conv_grad_sample
    assert GradSampleModule.GRAD_SAMPLERS[nn.Conv2d] is compute_conv_grad_sample
    assert hooks_b.GRAD_SAMPLERS[nn.Conv2d] is compute_conv_grad_sample
    assert GradSampleHooks(nn.Sequential(nn.Conv2d(16, 16, 3))).GRAD_SAMPLERS[nn.Conv2d] is compute_conv_grad_sample
    hooks_a.cleanup()
    hooks_b.cleanup()
