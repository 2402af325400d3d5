"""Faster per-sample gradients for Conv2d, installed on one DP session's Opacus hooks only.

Opacus' `compute_conv_grad_sample` unfolds every activation (a copy of 9x its size whose inner runs are one image
row long) and contracts it with an einsum. On the compact U-Net that took about 40% of a DP step on CPU, as much as
the whole plain backward pass. Worse, its unfold reads the padded activation through NCHW strides whatever its
layout, so on channels-last activations its gradients are wrong; training's one-hot label maps are channels-last
(`training.one_hot_tensor` permutes), and the U-Net's activations follow. The same per-sample weight gradients, to
float rounding, come cheaper (measured on the compact U-Net's layers at 32-64 px, batch 16, 1 thread):

- `grouped`: the batch folded into the channels, (1, B*C, H, W), makes the per-sample gradients the weight gradient
  of one convolution with B*groups groups, which `torch.nn.grad.conv2d_weight` (the backend's own
  convolution-backward kernel) computes without an unfold: 2-6x faster than Opacus' when the channels per group
  fill the kernel's 8-wide vector blocks (oneDNN on AVX2) on feature maps of 8x8 or more; with 4 or 5 input
  channels (the label-map modulations, the stem) or on 4x4 maps it is slower than Opacus'.
- `shifted`, for a stride-1 convolution with fewer than 8 outputs (the U-Net's last layer): with the activation
  zero-padded and flattened, each kernel offset's input window is one contiguous slice; the gradient, padded to the
  same row width with zeros that cancel the wrapped-around columns, is multiplied with each slice in place (one
  batched matrix product per offset, no copies). 10x faster than Opacus' there.
- `unfold_nhwc`, for channels-last activations and outputs up to 8x8: the unfold taken in NHWC order, whose runs
  are kernel-width x channels long, then one batched matrix product; 1.3-2x faster than the others there.
- `opacus`: everything else (the label-map modulations, string padding, other padding modes, empty batches), on a
  contiguous copy of the activation so that its unfold is right.

`install` puts the sampler on one `GradSampleHooks` object's own table (an instance attribute that shadows the
class-wide registry), so other Opacus users in the process are untouched and `hooks.cleanup()` or a new session
starts from Opacus' defaults.
"""
from __future__ import annotations

import torch
from opacus.grad_sample.conv import compute_conv_grad_sample
from torch import nn
from torch.nn import functional as F

from .opacus_adapter import use_grad_sampler

VECTOR_BLOCK = 8  # oneDNN's channel block on AVX2; the grouped kernel is fast only on whole blocks
NARROW_OUTPUT = 8  # below this many output channels the shifted products beat both others
MIN_GROUPED_AREA = 64  # on smaller feature maps (4x4) the grouped kernel's fixed cost loses to Opacus' einsum
MAX_UNFOLD_AREA = 64  # up to 8x8 outputs, channels-last activations unfold faster than any other path


def conv2d_method(layer: nn.Conv2d, activations: torch.Tensor) -> str:
    """Which computation `conv2d_grad_sample` uses for this layer and input: unfold_nhwc, grouped, shifted or
    opacus."""
    if (activations.dim() != 4 or activations.shape[0] == 0 or layer.padding_mode != "zeros"
            or isinstance(layer.padding, str)):
        return "opacus"
    c_in, c_out = layer.in_channels // layer.groups, layer.out_channels // layer.groups
    out_area = 1
    for size, k, s, p, d in zip(activations.shape[2:], layer.kernel_size, layer.stride, layer.padding,
                                layer.dilation):
        out_area *= (size + 2 * p - d * (k - 1) - 1) // s + 1
    if _channels_last(activations) and layer.groups == 1 and out_area <= MAX_UNFOLD_AREA:
        return "unfold_nhwc"
    if c_in % VECTOR_BLOCK == 0 and c_out % VECTOR_BLOCK == 0 and out_area >= MIN_GROUPED_AREA:
        return "grouped"
    if (c_out < NARROW_OUTPUT and layer.groups == 1 and layer.stride == (1, 1) and layer.dilation == (1, 1)
            and c_in >= VECTOR_BLOCK):
        return "shifted"
    return "opacus"


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _unfold_nhwc_weight_grad(layer: nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    n, c = x.shape[:2]
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = layer.kernel_size, layer.padding, layer.stride, layer.dilation
    out_h, out_w = g.shape[2:]
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # (n, H + 2ph, W + 2pw, c), contiguous
    row = padded.stride(1)
    # Each output pixel's window as (kh, kw, c): runs of kw * c contiguous values (dilation 1), no NCHW detour.
    cols = padded.as_strided((n, out_h, out_w, kh, kw, c),
                             (padded.stride(0), sh * row, sw * c, dh * row, dw * c, 1))
    cols = cols.reshape(n, out_h * out_w, kh * kw * c)
    grad = g.permute(0, 2, 3, 1).reshape(n, out_h * out_w, -1).transpose(1, 2)  # (n, o, L): a view when NHWC
    return torch.bmm(grad, cols).view(n, -1, kh, kw, c).permute(0, 1, 4, 2, 3)


def _grouped_weight_grad(layer: nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    weight_size = (n * layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size)
    per_sample = torch.nn.grad.conv2d_weight(
        x.reshape(1, n * layer.in_channels, *x.shape[2:]), weight_size,
        g.reshape(1, n * layer.out_channels, *g.shape[2:]),
        stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=n * layer.groups)
    return per_sample.view(n, *layer.weight.shape)


def _shifted_weight_grad(layer: nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    n, c, _, width = x.shape
    (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
    out_h, out_w = g.shape[2:]
    row = width + 2 * pw
    # One extra zero row at the bottom keeps the last offset's slice inside the tensor.
    flat = F.pad(x, (pw, pw, ph, ph + 1)).flatten(2)  # (n, c, (H + 2ph + 1) * row)
    length = out_h * row
    # Output columns out_w..row-1 are zero: they cancel the input windows that wrap around into the next row.
    grad = F.pad(g, (0, row - out_w)).reshape(n, -1, length)
    out = torch.empty((kh * kw, n, layer.out_channels, c), dtype=g.dtype, device=g.device)
    for i in range(kh):
        for j in range(kw):
            start = i * row + j
            torch.bmm(grad, flat[:, :, start:start + length].transpose(1, 2), out=out[i * kw + j])
    return out.permute(1, 2, 3, 0).reshape(n, *layer.weight.shape)


def conv2d_grad_sample(layer: nn.Conv2d, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of a Conv2d's weight and bias; Opacus' grad-sampler signature and results."""
    x = activations[0].to(backprops.dtype)
    method = conv2d_method(layer, x)
    if method == "opacus":
        # Opacus' unfold2d reads the padded input through NCHW strides whatever its layout: on channels-last
        # activations (which the training batches' one-hot label maps propagate) its gradients are wrong.
        return compute_conv_grad_sample(layer, [x.contiguous()], backprops)
    ret = {}
    if layer.weight.requires_grad:
        if method == "unfold_nhwc":
            ret[layer.weight] = _unfold_nhwc_weight_grad(layer, x, backprops)
        else:
            compute = _grouped_weight_grad if method == "grouped" else _shifted_weight_grad
            ret[layer.weight] = compute(layer, x.contiguous(), backprops.contiguous())
    if layer.bias is not None and layer.bias.requires_grad:
        ret[layer.bias] = backprops.sum(dim=(2, 3))
    return ret


def install(hooks) -> None:
    """Use `conv2d_grad_sample` for the nn.Conv2d layers of the modules behind these Opacus hooks only."""
    use_grad_sampler(hooks, nn.Conv2d, conv2d_grad_sample)
