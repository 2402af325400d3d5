"""White-box adapters for generators trained elsewhere: the `MembershipScorer` protocol of `auditors.base`.

A diffusion model trained with diffusers or MONAI Generative cannot be loaded as one of this project's
generators, but the strongest membership attack on a diffusion model needs only one thing from it: how well it
predicts the noise added to a slice (a training slice is denoised better; Carlini et al. 2023, Matsumoto et al.
2023). An adapter wraps the network and its noise schedule and returns, per slice, minus the mean denoising error
over fixed timesteps with noise drawn from the seed. The audit's membership-inference auditor then attacks it
white-box exactly as it attacks the project's own models.

Saved form (what `cmri-release audit --model FOLDER` accepts besides a model folder): `adapter.json` naming the
adapter and its settings, plus the network in its library's own format. Each adapter imports its library only
when used (optional extras `diffusers`, `monai`).
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import ADAPTER_FILE, NoisePredictionScorer

ADAPTERS = {  # kind in adapter.json -> "module:class"
    "diffusers-unet2d": "generators.adapters.diffusers_unet:DiffusersUNetScorer",
    "monai-diffusion-unet": "generators.adapters.monai_unet:MonaiDiffusionScorer",
}


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / ADAPTER_FILE).is_file()


def load_adapter(folder: Path, device: str = "cpu") -> NoisePredictionScorer:
    """The adapter saved in `folder` (refusing an unknown kind with the known ones)."""
    import importlib

    from cmri_release.core.errors import InputError

    path = Path(folder) / ADAPTER_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable adapter file ({type(exc).__name__})") from None
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind not in ADAPTERS:
        raise InputError(path, f"unknown adapter kind {kind!r}; known: {', '.join(ADAPTERS)}")
    module, attr = ADAPTERS[kind].split(":")
    return getattr(importlib.import_module(module), attr).load(Path(folder), doc, device=device)


__all__ = ["ADAPTERS", "ADAPTER_FILE", "NoisePredictionScorer", "is_adapter_folder", "load_adapter"]
