"""Every use of Opacus beyond its public API, in one place (pinned: opacus>=1.6,<1.7).

- `gaussian_noise`: `opacus.optimizers.optimizer._generate_noise` (private), the DP optimiser's own noise draw
  (its secure RNG when asked), so that the statistics released before training get exactly the DP-SGD mechanism.
- `history` / `set_history`: an accountant's `history`, a list of `(noise_multiplier, sample_rate, steps)`: read
  for the ledger, written to compose the releases with the DP-SGD steps and to compute epsilon for any history.
- `scale_grad_once`: replaces one `DPOptimizer`'s `scale_grad` (a pass over every parameter reading the
  `accumulated_iterations` property, itself a pass over every parameter) with the same division read once.
- `use_grad_sampler`: overrides the class-wide `GRAD_SAMPLERS` registry of per-sample gradient functions on one
  `GradSampleHooks` object only.
- `recording`: the hooks' `hooks_enabled` flag, which `disable_hooks`/`enable_hooks` toggle.

tests/generators/dp/test_opacus_adapter.py checks each of these against the installed Opacus and fails, naming the
assumption, when an upgrade changes one of them.
"""
from __future__ import annotations

import types

import torch

History = list[tuple[float, float, int]]


def gaussian_noise(std: float, reference: torch.Tensor, generator, secure_mode: bool) -> torch.Tensor:
    """N(0, std^2) noise shaped like `reference`, drawn as Opacus' DP optimiser draws it."""
    from opacus.optimizers.optimizer import _generate_noise

    return _generate_noise(std=std, reference=reference, generator=generator, secure_mode=secure_mode)


def history(accountant) -> History:
    return [tuple(h) for h in accountant.history]


def set_history(accountant, mechanisms: History) -> None:
    """Make `accountant` account for exactly `mechanisms` (later steps append to it)."""
    accountant.history = list(mechanisms)


def _scale_grad_once(optimizer) -> None:
    """Opacus' `DPOptimizer.scale_grad` (divide each noised sum by the expected batch size), with the divisor's
    `accumulated_iterations`, a pass over every parameter, read once rather than once per parameter: the same
    division, without a cost quadratic in the number of parameters (5 ms a step for the compact U-Net's 137)."""
    if optimizer.loss_reduction == "mean":
        divisor = optimizer.expected_batch_size * optimizer.accumulated_iterations
        for p in optimizer.params:
            p.grad /= divisor


def scale_grad_once(optimizer) -> bool:
    """Install `_scale_grad_once` on a DPOptimizer that uses Opacus' own `scale_grad`; True when installed."""
    from opacus.optimizers import DPOptimizer

    if type(optimizer).scale_grad is not DPOptimizer.scale_grad:
        return False  # a subclass that scales its own way keeps it
    optimizer.scale_grad = types.MethodType(_scale_grad_once, optimizer)
    return True


def use_grad_sampler(hooks, layer_type: type, sampler) -> None:
    """Compute the per-sample gradients of `layer_type` with `sampler` for the modules behind these hooks only."""
    hooks.GRAD_SAMPLERS = {**type(hooks).GRAD_SAMPLERS, layer_type: sampler}


def recording(hooks) -> bool:
    """Whether the hooks record per-sample gradients now (not between `disable_hooks` and `enable_hooks`)."""
    return hooks.hooks_enabled
