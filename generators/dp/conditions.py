"""Conditions that touch no patient: label maps drawn from the DP mask generator, vendors drawn uniformly.

A DP GAN's fakes and its generator's update must not read patient data: the discriminator's gradient on fakes is
then a function of the (already DP) mask model, the noise and the current networks only, so it needs no clipping or
noise, and the generator's whole update is post-processing of DP releases (opacus #418, #474). The vendor names are
the cohort's schema, not a patient's data.
"""
from __future__ import annotations

import numpy as np
import torch

from ..masks import PHASE_ORDER, MaskModel
from ..training import one_hot_tensor

POOL_PATIENTS = 32  # synthetic patients rendered once; their ED and ES slices are the pool


class PublicConditions:
    def __init__(self, mask_model: MaskModel, n_vendors: int, size: int, batch_size: int, seed: int):
        if mask_model is None:
            raise ValueError("no mask model to draw public label maps from")
        stacks = mask_model.sample(POOL_PATIENTS, seed=int(np.random.SeedSequence([int(seed), 6]).generate_state(1)[0]),
                                   size=size)
        labels = np.concatenate([np.concatenate([s.labels[p] for p in PHASE_ORDER]) for s in stacks])
        self.cond = one_hot_tensor(labels)
        self.n_vendors = int(n_vendors)
        self.batch_size = int(batch_size)
        self.gen = torch.Generator().manual_seed(int(seed) + 7)

    def __len__(self) -> int:
        return len(self.cond)

    def draw(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch_size, 4, H, W) one-hot label maps and (batch_size,) vendor indices, on `device`."""
        idx = torch.randint(len(self.cond), (self.batch_size,), generator=self.gen)
        vendor = torch.randint(self.n_vendors, (self.batch_size,), generator=self.gen)
        return self.cond[idx].to(device), vendor.to(device)
