"""DP-SGD across processes: Opacus' distributed pieces, kept in lock step.

Opacus' recipe (`DistributedDPOptimizer`, `DPDDP`, `DistributedUniformWithReplacementSampler`): the patients are
split between ranks and each rank Poisson-samples its own share with the GLOBAL rate q, so the union of the local
batches is exactly one Poisson sample of all patients; each rank clips its patients' gradients and sums them; rank 0
alone adds the Gaussian noise; the sums are all-reduced. One step is therefore the same subsampled Gaussian
mechanism as in one process, and the accountant records (sigma, q) once per step: the same q, sigma and steps give
the same epsilon whatever the number of processes.

The one change to Opacus: its distributed sampler skips a rank's empty local batch, so ranks would take different
numbers of steps (a hang at the next all-reduce) and an empty step would go unaccounted. `LockstepPoissonSampler`
yields it instead; the engine then releases noise-only gradients for it, as in one process.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from opacus.utils.uniform_sampler import DistributedUniformWithReplacementSampler


class LockstepPoissonSampler(DistributedUniformWithReplacementSampler):
    """Opacus' distributed Poisson sampler over patients, yielding every step's local batch, empty ones included;
    a new split of patients between ranks each epoch (public randomness, the same on every rank)."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(self.shuffle_seed + self.epoch)
        self.epoch += 1
        indices = torch.randperm(self.total_size, generator=g)[self.rank:self.total_size:self.num_replicas]
        for _ in range(self.num_batches):
            mask = torch.rand(self.num_samples, generator=self.generator) < self.sample_rate
            yield indices[mask.nonzero(as_tuple=False).reshape(-1)]


def lockstep_sampler(opacus_sampler, seed: int, rank: int, secure_rng=None) -> LockstepPoissonSampler:
    """The lock-step twin of the sampler Opacus' DP data loader built (same total size, rate and steps), with
    this rank's own Poisson draws: a seeded generator per rank, or the engine's secure one in secure mode."""
    if secure_rng is not None:
        gen = secure_rng
    else:
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), 7, int(rank)]).generate_state(1)[0]))
    return LockstepPoissonSampler(total_size=opacus_sampler.total_size, sample_rate=opacus_sampler.sample_rate,
                                  shuffle_seed=int(seed), steps=opacus_sampler.num_batches, generator=gen)
