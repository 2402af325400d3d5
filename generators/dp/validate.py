"""Check a network for DP-SGD before the first step, and say how to fix what cannot be trained privately.

Opacus' `ModuleValidator` knows which layers break per-sample gradients (BatchNorm, nn.MultiheadAttention, nn.LSTM,
InstanceNorm with running statistics...); it is run with `strict=False` so that every problem is collected, and each
is reported with the module's name and the replacement to use, on one line (the CLI prints it and exits 2).
Two holes in its net are closed here: a BatchNorm without affine parameters (Opacus only looks at trainable
modules, yet such a layer still mixes the samples of a batch) and trainable modules holding buffers (their state is
updated from the whole batch, outside the clipped per-sample gradients).
"""
from __future__ import annotations

from torch import nn

from cmri_release.core.errors import CmriError

# What to use instead, per kind of layer Opacus rejects.
_FIXES: tuple[tuple[tuple[type, ...], str], ...] = (
    ((nn.modules.batchnorm._BatchNorm,),
     "mixes the samples of a batch; replace it with nn.GroupNorm(groups, channels) "
     "(opacus.validators.ModuleValidator.fix does this)"),
    ((nn.modules.instancenorm._InstanceNorm,),
     "keeps running statistics over batches; set track_running_stats=False or use nn.GroupNorm"),
    ((nn.MultiheadAttention,), "has no per-sample gradients; replace it with opacus.layers.DPMultiheadAttention"),
    ((nn.LSTM,), "has no per-sample gradients; replace it with opacus.layers.DPLSTM"),
    ((nn.GRU,), "has no per-sample gradients; replace it with opacus.layers.DPGRU"),
    ((nn.RNN,), "has no per-sample gradients; replace it with opacus.layers.DPRNN"),
)


class DPIncompatibleError(CmriError):
    """A network that DP-SGD cannot train as it is; the message names each layer and its replacement."""


def _fix_for(module: nn.Module, fallback: str) -> str:
    for kinds, fix in _FIXES:
        if isinstance(module, kinds):
            return fix
    return fallback


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.split(". ")[0].splitlines()[0] if text else type(exc).__name__


def dp_problems(module: nn.Module, prefix: str = "") -> list[str]:
    """Every reason `module` cannot be trained with DP-SGD, one short sentence each naming the layer as
    `prefix.name` (empty when it can be trained)."""
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator

    def where(name: str) -> str:
        return ".".join(part for part in (prefix, name) if part) or "<network>"

    problems: list[str] = []
    was_training = module.training
    module.train()  # Opacus rejects a module in eval mode; the loop trains it anyway
    try:
        named = dict(trainable_modules(module))
        for name, sub in named.items():
            validator = ModuleValidator.VALIDATORS.get(type(sub))
            for error in (validator(sub) if validator else []):
                problems.append(f"{where(name)} ({type(sub).__name__}) "
                                f"{_fix_for(sub, _first_line(error))}")
            if validator is None and list(sub.buffers(recurse=False)):
                problems.append(f"{where(name)} ({type(sub).__name__}) holds buffers updated from the whole "
                                f"batch; make them constants or move them out of the trainable layer")
        for name, sub in module.named_modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm) and name not in named:
                problems.append(f"{where(name)} ({type(sub).__name__}) {_fix_for(sub, '')}")
        # The whole-module check is Opacus' own; anything it finds that was not attributed above is reported as is.
        if not problems:
            problems += [_first_line(e) for e in ModuleValidator.validate(module, strict=False)]
    finally:
        module.train(was_training)
    return problems


def require_dp_compatible(networks: dict[str, nn.Module], generator: str) -> None:
    """Raise `DPIncompatibleError` (one line, every problem and its fix) unless all `networks` can be trained with
    DP-SGD. Called before the first step, so that an incompatible network fails at once, not after an hour."""
    found = [problem for net, module in networks.items() for problem in dp_problems(module, net)]
    if found:
        raise DPIncompatibleError(f"generator {generator!r} cannot be trained with differential privacy: " + "; ".join(found))
