"""Data-parallel training across processes (torchrun): the process group, patient sharding, and rank 0's say.

`torchrun --nproc_per_node N cmri-release train ...` starts N copies of the command with RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR in the environment; `setup` joins them into one process group (gloo on the CPU, NCCL on
CUDA, one process per GPU). Run without torchrun, `setup` returns the one-process context and nothing else changes.

What is shared and what is per rank:
- every rank reads the cohort and holds its tensors; each step it only draws slices of ITS patients (patients are
  split between ranks, never slices of one patient);
- the weights start equal (DDP / Opacus' DPDDP broadcast rank 0's) and stay equal (gradients all-reduced);
- the global batch is the generator's `batch_size`, split across ranks, so N processes run the same optimisation
  as one, faster;
- statistics fitted before training (the mask model, vendor statistics) are rank 0's, broadcast to the others;
- rank 0 alone writes the model folder, prints and draws progress bars.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: one process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend}


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> tuple[DistContext, str]:
    """Join the process group torchrun describes (if any); returns the context and this rank's device."""
    if not launched_by_torchrun():
        return DistContext(), device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): start "
                               f"at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       backend=backend), device


def current() -> DistContext:
    """The context of the process group already joined (by `setup`), or one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")), backend=dist.get_backend())


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().active:
        torch.distributed.barrier()


def broadcast_from_main(obj):
    """Rank 0's `obj` on every rank (plain JSON-like data; torch pickles it between our own processes)."""
    if not current().active:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], device: str = "cpu") -> list[float]:
    """Element-wise sum over ranks of a few numbers (losses, counts), in float64."""
    if not current().active:
        return list(values)
    # NCCL reduces only CUDA tensors; gloo CPU ones.
    on = device if current().backend == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=on)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.cpu().tolist()


def any_rank(flag: bool, device: str = "cpu") -> bool:
    """True on every rank when it is True on one (a wall-clock budget ends all ranks at the same step)."""
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


def local_batch_size(global_batch: int, world_size: int) -> int:
    if global_batch < world_size:
        raise ValueError(f"batch size {global_batch} is smaller than the {world_size} processes it is split across")
    return -(-global_batch // world_size)


class ShardedPatientBatches:
    """Non-DP batches under DDP: each epoch torch's DistributedSampler splits the PATIENTS between ranks (a new
    split each epoch, the same on every rank); each rank shuffles its patients' slices and yields exactly
    `steps_per_epoch` batches of `local_batch` slices, the same count on every rank (DDP all-reduces once per step),
    wrapping around its slices when they run short."""

    def __init__(self, patient_of_slice: np.ndarray, global_batch: int, ctx: DistContext, seed: int):
        from torch.utils.data import DistributedSampler

        codes = np.asarray(patient_of_slice)
        n = int(codes.max()) + 1
        if n < ctx.world_size:
            raise ValueError(f"{n} training patients cannot be split across {ctx.world_size} processes; "
                             f"use at most {n} processes")
        self.slices = [np.flatnonzero(codes == p) for p in range(n)]
        self.local_batch = local_batch_size(global_batch, ctx.world_size)
        self.steps_per_epoch = max(1, -(-len(codes) // (self.local_batch * ctx.world_size)))
        # drop_last: no patient is given to two ranks in one epoch (the default pads by repeating patients).
        self.sampler = DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                          seed=seed, drop_last=True)
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11, ctx.rank]))
        self.epoch = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        mine = np.concatenate([self.slices[p] for p in self.sampler])
        order = self.rng.permutation(mine)
        need = self.steps_per_epoch * self.local_batch
        order = np.resize(order, need) if len(order) < need else order[:need]
        for start in range(0, need, self.local_batch):
            yield order[start:start + self.local_batch]
