"""The one training loop every image generator uses.

A generator describes its training as one or more `Objective`s (a loss over a batch and the modules it updates:
one for flow / DDPM / VAE, discriminator then generator for the GAN); this loop owns everything else: learning-rate
warm-up, EMA, the epoch or wall-clock budget, the progress bar and the log. What differs with and without
differential privacy is a strategy: its batches, optimisers and step. `PlainTraining` shuffles slices and takes
clipped Adam steps; `generators.dp.PrivateTraining` (with `privacy`, a `generators.dp.PrivacyAccount`) draws
patients by Poisson sampling (one DP item = one patient) and steps the objective that learns from patient data with
Opacus' DP optimiser, the noise calibrated to the epoch budget; objectives marked `private=False` must touch no
patient data and train as usual (a GAN's generator: post-processing).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cmri_release.core.labels import NUM_CLASSES
from cmri_release.core.parallel import global_rng_turn
from cmri_release.core.sliceset import SliceSet

from . import distributed
from .base import require_epoch_budget
from .steps import build_optimizer, plain_step


@dataclass
class Batch:
    x: torch.Tensor  # (B, 1, H, W) image scaled to [-1, 1]
    cond: torch.Tensor  # (B, 4, H, W) one-hot label map
    vendor: torch.Tensor  # (B,) vendor index


@dataclass
class SliceTensors:
    """A SliceSet's annotated slices as tensors, plus the patient of each slice (the future DP unit)."""

    x: torch.Tensor
    cond: torch.Tensor
    vendor: torch.Tensor
    patient: np.ndarray  # (N,) integer code of the slice's subject

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, index: np.ndarray, device: str) -> Batch:
        idx = torch.as_tensor(index, dtype=torch.long)
        return Batch(self.x[idx].to(device), self.cond[idx].to(device), self.vendor[idx].to(device))


def images_to_model(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) in [0, 1] -> (N, 1, H, W) in [-1, 1]."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None] * 2.0 - 1.0


def model_to_images(x: torch.Tensor) -> np.ndarray:
    return ((x[:, 0].clamp(-1.0, 1.0) + 1.0) / 2.0).cpu().numpy().astype(np.float32)


def one_hot_tensor(labels: np.ndarray) -> torch.Tensor:
    lab = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return torch.nn.functional.one_hot(lab, NUM_CLASSES).permute(0, 3, 1, 2).float()


def standard_normal(shape, gen: torch.Generator, device) -> torch.Tensor:
    """N(0, 1) noise drawn on `gen`'s own device, then moved to `device`. Training draws on a generator on the
    training device (no copy); sampling and membership scores draw on a CPU generator, so a model gives the same
    samples and scores on any device."""
    return torch.randn(shape, generator=gen, device=gen.device).to(device)


def make_tensors(slices: SliceSet, vendor_index: Callable[[list[str]], np.ndarray]) -> SliceTensors:
    codes, _ = slices.subject_codes()
    return SliceTensors(x=images_to_model(slices.images), cond=one_hot_tensor(slices.labels),
                        vendor=torch.as_tensor(vendor_index(slices.vendors.tolist()), dtype=torch.long),
                        patient=codes)


@dataclass
class Objective:
    name: str
    modules: list[nn.Module]  # the parameters this objective's optimiser updates
    loss: Callable[[Batch, torch.Generator], torch.Tensor]
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    # Under DP: False for an objective that touches no patient data (trained as usual, post-processing); and a loss
    # on data-independent inputs only, whose gradient is added after the DP noise (a GAN discriminator on fakes).
    private: bool = True
    public_loss: Callable[[torch.Generator], torch.Tensor] | None = None


@dataclass
class TrainSettings:
    batch_size: int = 32
    warmup_steps: int = 50
    grad_clip: float | None = 1.0  # plain training only; DP-SGD clips per patient instead
    ema_decay: float | None = 0.999  # None: no EMA


@dataclass
class TrainLog:
    steps: int = 0
    epochs: float = 0.0
    seconds: float = 0.0
    images_seen: int = 0
    losses: dict[str, list[float]] = field(default_factory=dict)  # per objective, mean loss per epoch
    final_loss: dict[str, float] = field(default_factory=dict)  # per objective, mean over the last steps
    privacy: dict | None = None  # the privacy ledger of a DP run
    world_size: int = 1  # processes that trained together (torchrun); images_seen counts all of them
    backend: str | None = None

    def to_dict(self) -> dict:
        extra = {} if self.privacy is None else {"privacy": self.privacy}
        return {**extra, "world_size": self.world_size, "backend": self.backend, "steps": self.steps, "epochs": round(self.epochs, 3), "seconds": round(self.seconds, 2),
                "images_per_second": round(self.images_seen / max(self.seconds, 1e-9), 2),
                "losses_per_epoch": {k: [round(v, 6) for v in vs] for k, vs in self.losses.items()},
                "final_loss": {k: round(v, 6) for k, v in self.final_loss.items()}}


class EMA:
    """Exponential moving average of a module's parameters, with the usual warm-up (decay grows with the step),
    so that a short CPU run is not dominated by its first random weights."""

    def __init__(self, module: nn.Module, decay: float):
        self.module = module
        self.decay = decay
        self.shadow = copy.deepcopy(module).requires_grad_(False)

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow.parameters(), self.module.parameters()):
            s.lerp_(p.detach(), 1 - d)
        for s, b in zip(self.shadow.buffers(), self.module.buffers()):
            s.copy_(b)

    @torch.no_grad()
    def copy_to_module(self) -> None:
        self.module.load_state_dict(self.shadow.state_dict())


def build_batches(data: SliceTensors, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of slice-index batches (shuffled, the last partial batch kept)."""
    order = rng.permutation(len(data))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


class _ObjectiveLoss(nn.Module):
    """An objective's loss as a module over its networks, so that DistributedDataParallel can wrap it: the
    generators call their networks directly, and DDP needs the forward that builds the graph to be its own."""

    def __init__(self, objective: Objective):
        super().__init__()
        self.objective = objective
        self.nets = nn.ModuleList(objective.modules)

    def forward(self, batch: Batch, gen: torch.Generator) -> torch.Tensor:
        return self.objective.loss(batch, gen)


def _ddp_losses(objectives: list[Objective], device: str) -> list[Callable]:
    """Each objective's loss through DDP (gradients all-reduced during backward, weights broadcast from rank 0)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return [DDP(_ObjectiveLoss(o), device_ids=ids) for o in objectives]


class PlainTraining:
    """Training without DP: shuffled slice batches, one Adam per objective, each step clipped to `grad_clip`. Under
    torchrun each rank takes its own shard of patients and each loss runs through DDP."""

    def __init__(self, objectives: list[Objective], data: SliceTensors, settings: TrainSettings, seed: int,
                 device: str, ctx):
        self.data, self.settings = data, settings
        self.rng = np.random.default_rng(seed)
        losses = _ddp_losses(objectives, device) if ctx.active else [o.loss for o in objectives]
        self.loss_of = {id(o): loss for o, loss in zip(objectives, losses)}
        self.shards = distributed.ShardedPatientBatches(data.patient, settings.batch_size, ctx, seed) \
            if ctx.active else None
        self.optimizers = [build_optimizer(o) for o in objectives]
        self.steps_taken = 0

    def epoch(self) -> Iterator[np.ndarray]:
        batches = self.shards if self.shards is not None else build_batches(self.data, self.settings.batch_size,
                                                                            self.rng)
        for index in batches:
            yield index
            self.steps_taken += 1  # resumed once every objective has stepped on this batch

    def step(self, objective: Objective, optimizer, batch: Batch, noise_gen: torch.Generator) -> float:
        return plain_step(objective, optimizer, batch, noise_gen, self.settings.grad_clip, f"step {self.steps_taken}",
                          loss=self.loss_of[id(objective)])

    def epochs(self, log: "TrainLog") -> float:
        return log.images_seen / len(self.data)

    def ledger(self) -> None:
        return None

    def close(self) -> None:
        pass


def _check_budget(privacy, epochs: int | None, minutes: float | None, data: SliceTensors) -> None:
    require_epoch_budget(privacy, epochs)
    if epochs is None and minutes is None:
        raise ValueError("give a training budget: epochs or minutes")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if minutes is not None and minutes <= 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    if len(data) == 0:
        raise ValueError("no annotated slices to train on")


def run_training(objectives: list[Objective], data: SliceTensors, settings: TrainSettings, *,
                 epochs: int | None = None, minutes: float | None = None, seed: int = 0, device: str = "cpu",
                 quiet: bool = False, privacy=None, ema_modules: list[nn.Module] = (),
                 description: str = "train") -> TrainLog:
    """Train until `epochs` passes over the data or `minutes` of wall-clock time, whichever comes first.

    On return the modules in `ema_modules` hold their EMA weights (what sampling and the model folder use).
    Under DP, `epochs` is required (the noise is calibrated to the steps it implies); `minutes` may cut the run short,
    and the ledger then reports the smaller epsilon actually spent.
    """
    _check_budget(privacy, epochs, minutes, data)
    ctx = distributed.current()
    with global_rng_turn():  # not while a model beside this one seeds its weights (core.parallel)
        torch.manual_seed(seed)  # for what draws from the global generator (Opacus' noise)
    # Each rank draws its own training noise (the diffusion time, the flow's source sample) for its own slices.
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1_000_003 * ctx.rank)
    if privacy is None:
        strategy = PlainTraining(objectives, data, settings, seed, device, ctx)
    else:
        from .dp.engine import PrivateTraining
        strategy = PrivateTraining(objectives, data, settings, privacy, epochs=epochs, seed=seed)
    try:  # Opacus' hooks come off the networks even when a step fails
        emas = [EMA(m, settings.ema_decay) for m in ema_modules] if settings.ema_decay else []
        log, recent = _loop(objectives, strategy, data, settings, emas, ctx, epochs=epochs, minutes=minutes,
                            device=device, quiet=quiet or not ctx.is_main, description=description,
                            noise_gen=noise_gen)
        log.privacy = strategy.ledger()
    finally:
        strategy.close()
    log.final_loss = {k: float(np.mean(v)) for k, v in recent.items()}
    for ema in emas:
        ema.copy_to_module()
    for m in {id(m): m for o in objectives for m in o.modules}.values():
        m.eval()
    return log


def _loop(objectives: list[Objective], strategy, data: SliceTensors, settings: TrainSettings, emas: list[EMA], ctx, *,
          epochs, minutes, device: str, quiet: bool, description: str,
          noise_gen: torch.Generator) -> tuple[TrainLog, dict[str, list[float]]]:
    """The epochs: warm-up, each objective stepped by the strategy, EMA, the budget, the progress bar and the log
    (losses and images summed over every rank under torchrun)."""
    for m in {id(m): m for o in objectives for m in o.modules}.values():
        m.train()
    log = TrainLog(losses={o.name: [] for o in objectives})
    recent = {o.name: [] for o in objectives}
    budget_s = None if minutes is None else 60.0 * minutes
    start = time.perf_counter()
    bar = tqdm(total=epochs if budget_s is None else int(budget_s), unit="epoch" if budget_s is None else "s",
               desc=description, disable=quiet, leave=False)
    epoch, done = 0, False
    while not done:
        sums = {o.name: 0.0 for o in objectives}
        n_batches = 0
        for index in strategy.epoch():
            batch = data.batch(index, device)
            warm = min(1.0, (log.steps + 1) / max(settings.warmup_steps, 1))
            for objective, optimizer in zip(objectives, strategy.optimizers):
                for group in optimizer.param_groups:
                    group["lr"] = objective.lr * warm
                optimizer.zero_grad(set_to_none=True)
                value = strategy.step(objective, optimizer, batch, noise_gen)
                if value is None:  # an empty Poisson batch: noise only, no loss to log
                    continue
                sums[objective.name] += value
                recent[objective.name] = (recent[objective.name] + [value])[-50:]
            for ema in emas:
                ema.update(log.steps)
            log.steps += 1
            log.images_seen += len(index)
            n_batches += 1
            elapsed = time.perf_counter() - start
            if budget_s is not None:
                bar.update(min(int(elapsed), int(budget_s)) - bar.n)
            bar.set_postfix({k: f"{np.mean(v):.4f}" for k, v in recent.items()}, refresh=False)
            if budget_s is not None and (distributed.any_rank(elapsed >= budget_s, device) if ctx.active
                                         else elapsed >= budget_s):
                done = True  # every rank stops at the same step (each step's all-reduce needs all of them)
                break
        epoch += 1
        names = list(sums)
        totals = distributed.all_reduce_sum([sums[k] for k in names] + [n_batches], device)
        for name, total in zip(names, totals):  # the mean over every rank's batches
            log.losses[name].append(total / max(totals[-1], 1))
        if budget_s is None:
            bar.update(1)
        if epochs is not None and epoch >= epochs:
            done = True
    bar.close()
    log.seconds = time.perf_counter() - start
    log.images_seen = int(distributed.all_reduce_sum([log.images_seen], device)[0])
    log.world_size, log.backend = ctx.world_size, ctx.backend
    log.epochs = strategy.epochs(log)
    return log, recent
