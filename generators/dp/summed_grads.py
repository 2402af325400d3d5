"""Skip the summed weight gradients that DP-SGD throws away.

With Opacus' hooks, a backward pass computes two things for every weight: the per-sample gradients (the hooks,
from each layer's input and output gradient) and, as autograd always does, the batch-summed gradient in `p.grad`.
DP-SGD never reads the latter: the optimiser overwrites `p.grad` with the clipped, noised sum of the per-sample
ones. For convolutions that wasted work is a whole weight-gradient kernel per layer (about a quarter of a DP step of
the compact U-Net at 64 px on CPU, most of it in the label-map modulation convolutions).

`SkipSummedGrads` gives each nn.Conv2d and nn.Linear of the private networks a forward that, inside `forward_pass()`
(the private loss of one DP step) and while Opacus records (hooks enabled, training mode, gradients on), uses its
weight and bias detached: autograd then only propagates the gradient to the layer's input. `_ToOutputOnly` keeps
the output in the graph when the input needs no gradient (the stem, the label-map modulations), so the layer's
backward hook still receives its output gradient. The per-sample gradients are bit-for-bit those of the plain
forward (tests/generators/dp/test_summed_grads.py); only `p.grad` stays None until the optimiser fills it. Anywhere
else (a public loss with Opacus' hooks off, eval, no_grad, any code after a failed step) the layers run their own
forward, so a plain optimiser never meets a missing gradient. A loss that differentiates through a layer twice (a
gradient penalty) is not supported here, as it is not by Opacus' hooks. `remove()` restores the layers.
"""
from __future__ import annotations

import contextlib
import types

import torch
from torch import nn
from torch.nn import functional as F

from .opacus_adapter import recording

PATCHED_TYPES = (nn.Conv2d, nn.Linear)  # exact types: the forwards below repeat theirs with detached parameters


class _ToOutputOnly(torch.autograd.Function):
    """Identity on `out` that makes it depend on `weight` for autograd, yet sends `weight` no gradient."""

    @staticmethod
    def forward(ctx, out, weight):
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class SkipSummedGrads:
    """While installed, the private layers compute no summed weight gradient when Opacus records per-sample ones."""

    def __init__(self, modules: list[nn.Module], hooks):
        self.hooks = hooks
        self.active = False
        layers = {id(m): m for root in modules for m in root.modules() if type(m) in PATCHED_TYPES}
        self.layers = list(layers.values())
        for layer in self.layers:
            layer.forward = self._forward_of(layer)

    @contextlib.contextmanager
    def forward_pass(self):
        """The private loss's forward pass: the only place where summed weight gradients are skipped."""
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def _records(self, layer: nn.Module) -> bool:
        """Inside `forward_pass`, and Opacus' own condition for capturing this layer's activations
        (GradSampleHooks.capture_activations_hook), so that its per-sample gradients are computed."""
        return self.active and recording(self.hooks) and layer.training and torch.is_grad_enabled()

    def _forward_of(self, layer: nn.Module):
        own_forward = type(layer).forward

        def forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
            params = [p for p in (layer.weight, layer.bias) if p is not None and p.requires_grad]
            if not params or not self._records(layer):
                return own_forward(layer, x)
            weight = layer.weight.detach()
            bias = None if layer.bias is None else layer.bias.detach()
            if isinstance(layer, nn.Conv2d):
                out = layer._conv_forward(x, weight, bias)
            else:
                out = F.linear(x, weight, bias)
            return out if x.requires_grad else _ToOutputOnly.apply(out, params[0])

        # A bound method, so that a deep copy of the network (an EMA shadow) calls it on the copy's own parameters.
        return types.MethodType(forward, layer)

    def remove(self) -> None:
        for layer in self.layers:
            layer.__dict__.pop("forward", None)
        self.layers = []
