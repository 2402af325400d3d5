"""`flow`, the default generator: conditional flow matching on the rectified (optimal-transport) path.

Training (Lipman et al. 2023; Liu et al. 2023): x_t = (1 - t) x_0 + t x_1 with x_0 ~ N(0, I) and x_1 the image,
the network regresses the constant velocity x_1 - x_0. Sampling integrates the learnt ODE from noise to image with
the Euler or Heun solver of `solvers.py` in a few steps. Optional classifier-free guidance: during training the label
map and vendor are dropped together with probability `cond_dropout`; sampling mixes conditional and unconditional
velocities with weight `guidance` (1 = plain conditional sampling, one evaluation per step).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from . import solvers
from .base import register_generator
from .neural import NeuralGenerator
from .training import Batch, Objective, standard_normal

TIME_SAMPLING = ("uniform", "logit_normal")


@register_generator
class FlowMatching(NeuralGenerator):
    name = "flow"
    EXTRA_DEFAULTS = {
        "solver": "heun",
        "steps": 8,  # Heun: 15 network evaluations per slice
        "time_sampling": "logit_normal",  # SD3 (Esser et al. 2024): more training signal at mid t
        "cond_dropout": 0.0,
        "guidance": 1.0,
        "membership_times": [0.25, 0.5, 0.75],
    }

    def __init__(self, **config):
        super().__init__(**config)
        solvers.check_solver(self.config["solver"], self.config["steps"])
        if self.config["time_sampling"] not in TIME_SAMPLING:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLING}")
        if not 0.0 <= float(self.config["cond_dropout"]) < 1.0:
            raise ValueError("cond_dropout must be in [0, 1)")
        if float(self.config["guidance"]) != 1.0 and float(self.config["cond_dropout"]) == 0.0:
            raise ValueError("guidance != 1 needs an unconditional model: set cond_dropout > 0 (e.g. 0.1)")

    def _build(self, n_vendors: int) -> None:
        self.net = self._unet(in_channels=1, time_conditioned=True)

    def _networks(self):
        return {"net": self.net}

    def _ema_modules(self):
        return [self.net]

    def _times(self, n: int, gen: torch.Generator, device) -> torch.Tensor:
        if self.config["time_sampling"] == "uniform":
            return torch.rand(n, generator=gen, device=device)
        return torch.sigmoid(torch.randn(n, generator=gen, device=device))

    def _drop_condition(self, batch: Batch, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        p = float(self.config["cond_dropout"])
        if p == 0.0:
            return batch.cond, batch.vendor
        drop = torch.rand(len(batch.x), generator=gen, device=batch.x.device) < p
        cond = batch.cond * (~drop)[:, None, None, None]
        vendor = torch.where(drop, torch.full_like(batch.vendor, self.null_vendor), batch.vendor)
        return cond, vendor

    def _loss(self, batch: Batch, gen: torch.Generator) -> torch.Tensor:
        x1 = batch.x
        x0 = torch.randn(x1.shape, generator=gen, device=x1.device)
        t = self._times(len(x1), gen, x1.device)
        tt = t[:, None, None, None]
        cond, vendor = self._drop_condition(batch, gen)
        v = self.net((1 - tt) * x0 + tt * x1, cond, vendor, t)
        return F.mse_loss(v, x1 - x0)

    def _objectives(self):
        return [Objective("flow", [self.net], self._loss, lr=float(self.config["lr"]))]

    def _initial_noise(self, n, size, gen):
        return torch.randn((n, 1, size, size), generator=gen)

    def _velocity(self, cond, vendor):
        w = float(self.config["guidance"])
        # The label maps are the same at every solver step: their SPADE modulations are computed once.
        prepared = self.net.prepare(cond)
        if w != 1.0:
            no_cond, no_vendor = self.net.prepare(torch.zeros_like(cond)), torch.full_like(vendor, self.null_vendor)

        def velocity(x, t):
            v = self.net(x, prepared, vendor, t)
            if w != 1.0:
                v_uncond = self.net(x, no_cond, no_vendor, t)
                v = v_uncond + w * (v - v_uncond)
            return v

        return velocity

    def _sample_batch(self, noise, cond, vendor):
        return solvers.solve(self._velocity(cond, vendor), noise, int(self.config["steps"]), self.config["solver"])

    def _evaluations_per_sample(self) -> int:
        per_step = 1 if float(self.config["guidance"]) == 1.0 else 2
        return per_step * solvers.evaluations(self.config["solver"], int(self.config["steps"]))

    def _membership_batch(self, batch, gen):
        """Negative flow-matching loss averaged over a few intermediate times (Matsumoto et al.: mid t leaks most)."""
        x1 = batch.x
        losses = []
        cond = self.net.prepare(batch.cond)
        for t_value in self.config["membership_times"]:
            x0 = standard_normal(x1.shape, gen, x1.device)
            t = torch.full((len(x1),), float(t_value), device=x1.device)
            v = self.net((1 - t_value) * x0 + t_value * x1, cond, batch.vendor, t)
            losses.append((v - (x1 - x0)).pow(2).mean(dim=(1, 2, 3)))
        return -torch.stack(losses).mean(dim=0)
