"""DDPM noise schedules and the DDIM update, kept apart from the network.

A `NoiseSchedule` holds the cumulative signal fraction alpha_bar(t) for t = 0..T-1 (Ho et al. 2020; the cosine
schedule of Nichol & Dhariwal 2021); `ddim_timesteps` picks the sampling sub-sequence and `ddim_step` is the
deterministic (eta = 0) DDIM update of Song et al. 2021, optionally stochastic with eta > 0.
"""
from __future__ import annotations

import math

import numpy as np
import torch

SCHEDULES = ("linear", "cosine")


class NoiseSchedule:
    def __init__(self, kind: str = "cosine", timesteps: int = 1000):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {kind!r}; known: {', '.join(SCHEDULES)}")
        if timesteps < 2:
            raise ValueError(f"a noise schedule needs at least 2 timesteps, got {timesteps}")
        self.kind = kind
        self.timesteps = int(timesteps)
        if kind == "linear":
            # Ho et al.'s betas 1e-4..0.02 for T=1000, rescaled so other T keep the same end points in alpha_bar.
            scale = 1000.0 / timesteps
            betas = np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)
            alpha_bar = np.cumprod(1.0 - betas)
        else:
            s = 0.008
            f = np.cos((np.arange(timesteps + 1) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
            betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
            alpha_bar = np.cumprod(1.0 - betas)
        self.alpha_bar = torch.tensor(alpha_bar, dtype=torch.float32)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t integer (B,)."""
        abar = self.alpha_bar.to(x0.device)[t][:, None, None, None]
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def time_input(self, t: torch.Tensor) -> torch.Tensor:
        """The network's time input in [0, 1]."""
        return t.float() / (self.timesteps - 1)


def ddim_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """`steps` evenly spaced training timesteps, from the noisiest down (the 'trailing' spacing of Lin et al. 2024,
    which starts at T-1 so the first step sees pure noise)."""
    if not 1 <= int(steps) <= schedule.timesteps:
        raise ValueError(f"DDIM steps must be 1..{schedule.timesteps}, got {steps}")
    ts = np.round(np.linspace(schedule.timesteps, 0, steps, endpoint=False)).astype(int) - 1
    return [int(t) for t in ts]


def ddim_step(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM update from timestep t to t_prev (t_prev = -1 means the clean image)."""
    abar = schedule.alpha_bar[t]
    abar_prev = schedule.alpha_bar[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    x0 = x0.clamp(-1.0, 1.0)  # the data lives in [-1, 1]; clipping the estimate keeps few-step sampling stable
    eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
    direction = (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
    x_prev = abar_prev.sqrt() * x0 + direction
    if eta > 0:
        if noise is None:
            raise ValueError("stochastic DDIM (eta > 0) needs a noise tensor")
        x_prev = x_prev + sigma * noise
    return x_prev
