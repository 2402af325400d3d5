"""`ddpm`: denoising diffusion (Ho et al. 2020) trained to predict the noise, sampled with DDIM (Song et al. 2021)
in a configurable number of deterministic steps. The schedule and the update rule live in `schedules.py`."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import register_generator
from .neural import NeuralGenerator
from .schedules import NoiseSchedule, ddim_step, ddim_timesteps
from .training import Objective, standard_normal


@register_generator
class DDPM(NeuralGenerator):
    name = "ddpm"
    EXTRA_DEFAULTS = {
        "schedule": "cosine",
        "timesteps": 1000,
        "steps": 20,  # DDIM sampling steps = network evaluations per slice
        "membership_timesteps": [100, 300, 500],
    }

    def __init__(self, **config):
        super().__init__(**config)
        self.schedule = NoiseSchedule(self.config["schedule"], int(self.config["timesteps"]))
        ddim_timesteps(self.schedule, int(self.config["steps"]))  # validates the step count
        if any(not 0 <= int(t) < self.schedule.timesteps for t in self.config["membership_timesteps"]):
            raise ValueError(f"membership_timesteps must lie in 0..{self.schedule.timesteps - 1}")

    def _build(self, n_vendors: int) -> None:
        self.net = self._unet(in_channels=1, time_conditioned=True)

    def _networks(self):
        return {"net": self.net}

    def _ema_modules(self):
        return [self.net]

    def _loss(self, batch, gen):
        x0 = batch.x
        noise = torch.randn(x0.shape, generator=gen, device=x0.device)
        t = torch.randint(0, self.schedule.timesteps, (len(x0),), generator=gen, device=x0.device)
        x_t = self.schedule.add_noise(x0, noise, t)
        return F.mse_loss(self.net(x_t, batch.cond, batch.vendor, self.schedule.time_input(t)), noise)

    def _objectives(self):
        return [Objective("ddpm", [self.net], self._loss, lr=float(self.config["lr"]))]

    def _initial_noise(self, n, size, gen):
        return torch.randn((n, 1, size, size), generator=gen)

    def _sample_batch(self, noise, cond, vendor):
        ts = ddim_timesteps(self.schedule, int(self.config["steps"]))
        x = noise
        prepared = self.net.prepare(cond)  # the same label maps at every step: SPADE modulations once
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            t_in = self.schedule.time_input(torch.full((len(x),), t, device=x.device))
            eps = self.net(x, prepared, vendor, t_in)
            x = ddim_step(self.schedule, x, eps, t, t_prev)
        return x

    def _evaluations_per_sample(self) -> int:
        return int(self.config["steps"])

    def _membership_batch(self, batch, gen):
        """Negative noise-prediction loss at a few intermediate timesteps."""
        losses = []
        cond = self.net.prepare(batch.cond)
        for t_value in self.config["membership_timesteps"]:
            noise = standard_normal(batch.x.shape, gen, batch.x.device)
            t = torch.full((len(batch.x),), int(t_value), dtype=torch.long, device=batch.x.device)
            eps = self.net(self.schedule.add_noise(batch.x, noise, t), cond, batch.vendor,
                           self.schedule.time_input(t))
            losses.append((eps - noise).pow(2).mean(dim=(1, 2, 3)))
        return -torch.stack(losses).mean(dim=0)
