"""MONAI's `DiffusionModelUNet` (monai.networks.nets) + its `DDPMScheduler` as a white-box membership scorer.

Saved form: `adapter.json` with the network's and the scheduler's constructor keywords, and `weights.pt` (a state
dict, loaded with weights_only=True).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .base import NoisePredictionScorer


def _monai():
    try:
        from monai.networks.nets import DiffusionModelUNet
        from monai.networks.schedulers import DDPMScheduler
    except ImportError:
        from cmri_release.core.errors import CmriError

        raise CmriError("the MONAI adapter needs monai: pip install 'cmri-release[monai]'") from None
    return DiffusionModelUNet, DDPMScheduler


class MonaiDiffusionScorer(NoisePredictionScorer):
    kind = "monai-diffusion-unet"

    def __init__(self, network, scheduler, *, network_kwargs: dict | None = None,
                 scheduler_kwargs: dict | None = None, **kwargs):
        self.network_kwargs = dict(network_kwargs or {})  # what rebuilds the network when loaded
        self.scheduler_kwargs = dict(scheduler_kwargs or {})
        super().__init__(network, scheduler, **kwargs)

    def predict_noise(self, x_t, t):
        return self.network(x_t, timesteps=t)

    def add_noise(self, x0, noise, t):
        return self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        self.write_settings(folder, {"network": self.network_kwargs, "scheduler": self.scheduler_kwargs})
        torch.save(self.network.state_dict(), folder / "weights.pt")
        return folder

    @classmethod
    def load(cls, folder: Path, doc: dict, device: str = "cpu") -> "MonaiDiffusionScorer":
        unet_cls, scheduler_cls = _monai()
        network = unet_cls(**doc.get("network", {}))
        network.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
        scheduler = scheduler_cls(**doc.get("scheduler", {}))
        return cls(network, scheduler, network_kwargs=doc.get("network"), scheduler_kwargs=doc.get("scheduler"),
                   **cls.options_from(doc, device))
