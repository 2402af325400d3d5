"""A diffusers `UNet2DModel` + noise scheduler (DDPM/DDIM...) as a white-box membership scorer.

Saved form: `adapter.json`, `unet/` (`save_pretrained`) and `scheduler/` (the scheduler's config), all local:
loading reads those folders and never reaches the network.
"""
from __future__ import annotations

from pathlib import Path


from .base import NoisePredictionScorer


def _diffusers():
    try:
        import diffusers
    except ImportError:
        from cmri_release.core.errors import CmriError

        raise CmriError("the diffusers adapter needs diffusers: pip install 'cmri-release[diffusers]'") from None
    return diffusers


class DiffusersUNetScorer(NoisePredictionScorer):
    kind = "diffusers-unet2d"

    def predict_noise(self, x_t, t):
        return self.network(x_t, t).sample

    def add_noise(self, x0, noise, t):
        return self.scheduler.add_noise(x0, noise, t.cpu()).to(x0.dtype)

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        self.network.save_pretrained(folder / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(folder / "scheduler")
        self.write_settings(folder, {"scheduler_class": type(self.scheduler).__name__})
        return folder

    @classmethod
    def load(cls, folder: Path, doc: dict, device: str = "cpu") -> "DiffusersUNetScorer":
        diffusers = _diffusers()
        name = doc.get("scheduler_class", "DDPMScheduler")
        scheduler_cls = getattr(diffusers, name, None)
        if scheduler_cls is None or not name.endswith("Scheduler"):
            from cmri_release.core.errors import InputError

            raise InputError(folder / "adapter.json", f"unknown diffusers scheduler {name!r}")
        unet = diffusers.UNet2DModel.from_pretrained(str(folder / "unet"), local_files_only=True)
        scheduler = scheduler_cls.from_pretrained(str(folder / "scheduler"), local_files_only=True)
        return cls(unet, scheduler, **cls.options_from(doc, device))


__all__ = ["DiffusersUNetScorer"]
