"""The shared part of the adapters: noise a slice at fixed timesteps, ask the network for the noise, score."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from cmri_release.core.sliceset import SliceSet

ADAPTER_FILE = "adapter.json"
N_LABELS = 4  # ACDC label maps: background, RV, MYO, LV


class NoisePredictionScorer(ABC):
    """Membership scores of an epsilon-predicting diffusion network (implements `auditors.base.MembershipScorer`).

    `conditioning` says what the network sees besides the noisy slice: "none" (1 input channel) or "mask" (the
    slice's label map one-hot, 4 more channels concatenated, the usual way to condition a U-Net on a mask).
    Images in the SliceSet are in [0, 1]; `value_range` (-1, 1) maps them as most diffusion models were trained.
    """
    kind: str = ""

    def __init__(self, network, scheduler, *, conditioning: str = "none", timesteps=(50, 100, 200, 400),
                 value_range=(-1.0, 1.0), batch: int = 64, device: str = "cpu", preprocess: dict | None = None,
                 card: dict | None = None):
        if conditioning not in ("none", "mask"):
            raise ValueError(f"conditioning must be 'none' or 'mask', got {conditioning!r}")
        self.network = network.to(device).eval()
        self.scheduler = scheduler
        self.conditioning = conditioning
        self.timesteps = tuple(int(t) for t in timesteps)
        self.value_range = tuple(float(v) for v in value_range)
        self.batch = int(batch)
        self.device = device
        self.preprocess = dict(preprocess or {})  # how the audit should preprocess cohorts for this network
        self.model_card = {"generator": self.kind, "adapter": self.settings(), **(card or {})}

    def settings(self) -> dict:
        return {"kind": self.kind, "conditioning": self.conditioning, "timesteps": list(self.timesteps),
                "value_range": list(self.value_range), "batch": self.batch, "preprocess": self.preprocess}

    @abstractmethod
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's noise prediction for noisy inputs (with any conditioning channels) at timesteps t."""

    @abstractmethod
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The scheduler's forward process q(x_t | x_0)."""

    def _inputs(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        lo, hi = self.value_range
        x0 = torch.from_numpy(images[:, None].astype(np.float32)) * (hi - lo) + lo
        cond = None
        if self.conditioning == "mask":
            onehot = np.eye(N_LABELS, dtype=np.float32)[labels.astype(np.int64)]  # (N, H, W, 4)
            cond = torch.from_numpy(onehot).permute(0, 3, 1, 2).contiguous()
        return x0.to(self.device), None if cond is None else cond.to(self.device)

    @torch.no_grad()
    def membership_scores(self, slices: SliceSet, seed: int) -> np.ndarray:
        """(N,) minus the mean squared noise-prediction error over the timesteps (higher: more member-like)."""
        gen = torch.Generator().manual_seed(int(seed))
        out = []
        for start in range(0, len(slices), self.batch):
            stop = min(start + self.batch, len(slices))
            x0, cond = self._inputs(slices.images[start:stop], slices.labels[start:stop])
            err = torch.zeros(len(x0), device=self.device)
            for step in self.timesteps:
                noise = torch.randn(x0.shape, generator=gen).to(self.device)
                t = torch.full((len(x0),), step, dtype=torch.long, device=self.device)
                x_t = self.add_noise(x0, noise, t)
                inputs = x_t if cond is None else torch.cat([x_t, cond], dim=1)
                err += ((self.predict_noise(inputs, t) - noise) ** 2).mean(dim=(1, 2, 3))
            out.append((-err / len(self.timesteps)).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def write_settings(self, folder: Path, extra: dict | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ADAPTER_FILE).write_text(json.dumps({**self.settings(), **(extra or {})}, indent=2) + "\n",
                                           encoding="utf-8")

    @staticmethod
    def options_from(doc: dict, device: str) -> dict:
        keys = ("conditioning", "timesteps", "value_range", "batch", "preprocess")
        return {**{k: doc[k] for k in keys if k in doc}, "device": device}
