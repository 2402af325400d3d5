"""Train the audit's segmenter: Dice + cross-entropy, seeded, augmented, a fixed number of steps.

Every segmenter of one audit (TRTR, TSTR, leave-one-vendor-out, low-data) gets the same number
of optimiser steps, so that their Dice scores differ by the data they saw, not by the compute
they got. The step count comes from an epoch budget over the real training set (`steps_for`).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from auditors.base import Option, register_options
from cmri_release.core.labels import NUM_CLASSES
from cmri_release.core.parallel import one_thread, seeded_global_rng
from cmri_release.core.sliceset import SliceSet

from .unet import UNet, UNetConfig


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    # Small batches: at a fixed CPU budget, many small steps beat few large ones by far (on the
    # 40-patient phantom at 64 px, 6 epochs gave Dice 0.82 with batch 8 against 0.49 with batch 32,
    # for the same 12.5 s of CPU). GroupNorm makes the network indifferent to the batch size.
    batch_size: int = 8
    lr: float = 4e-3  # peak of a one-cycle schedule: high, because the budget is a few hundred steps
    weight_decay: float = 1e-4
    max_shift: int = 4  # px, random translation
    intensity_jitter: bool = True  # scale, offset, gamma and noise per slice (vendor-like contrast changes)
    unet: UNetConfig = field(default_factory=UNetConfig)

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


def steps_for(epochs: float, n_slices: int, batch_size: int, minimum: int = 20) -> int:
    """Optimiser steps for `epochs` passes over `n_slices` slices (at least `minimum`)."""
    if epochs <= 0:
        raise ValueError(f"the epoch budget must be positive, got {epochs}")
    return max(minimum, int(math.ceil(epochs * n_slices / batch_size)))


def pad_to_multiple(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad (N, C, H, W) at the bottom/right to a multiple of `divisor`; return the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    return (F.pad(x, (0, pw, 0, ph)) if ph or pw else x), (h, w)


def augment(images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, max_shift: int,
            intensity_jitter: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and shifts (the same on image and label) and per-slice intensity jitter.

    images (N, 1, H, W) float, labels (N, H, W) long. Shifts pad with zeros (background) and
    crop, rather than roll, so that nothing wraps around the edge.
    """
    n, _, h, w = images.shape
    flip_h = torch.as_tensor(rng.random(n) < 0.5, device=images.device)
    flip_v = torch.as_tensor(rng.random(n) < 0.5, device=images.device)
    images = torch.where(flip_h[:, None, None, None], images.flip(-1), images)
    labels = torch.where(flip_h[:, None, None], labels.flip(-1), labels)
    images = torch.where(flip_v[:, None, None, None], images.flip(-2), images)
    labels = torch.where(flip_v[:, None, None], labels.flip(-2), labels)
    if max_shift > 0:
        s = max_shift
        pi, pl = F.pad(images, (s, s, s, s)), F.pad(labels, (s, s, s, s))
        dy, dx = rng.integers(0, 2 * s + 1, size=(2, n))
        images = torch.stack([pi[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        labels = torch.stack([pl[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if intensity_jitter:
        def per_slice(lo, hi):
            return torch.as_tensor(rng.uniform(lo, hi, size=n), dtype=images.dtype,
                                   device=images.device)[:, None, None, None]
        lo = images.amin(dim=(2, 3), keepdim=True)
        span = (images.amax(dim=(2, 3), keepdim=True) - lo).clamp_min(1e-6)
        images = lo + span * ((images - lo) / span).clamp(0, 1) ** per_slice(0.7, 1.4)  # gamma: contrast
        images = images * per_slice(0.9, 1.1) + per_slice(-0.05, 0.05) * span  # gain and offset
        noise = torch.as_tensor(rng.standard_normal(images.shape), dtype=images.dtype, device=images.device)
        images = images + noise * per_slice(0.0, 0.03) * span
    return images, labels


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice of the foreground classes over the batch)."""
    ce = F.cross_entropy(logits, labels)
    prob = logits.softmax(dim=1)[:, 1:]
    onehot = F.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2)[:, 1:].to(prob.dtype)
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    total = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    soft_dice = (2 * inter + 1.0) / (total + 1.0)
    return ce + (1 - soft_dice.mean())


class Segmenter:
    """A trained U-Net, frozen: label maps and pooled encoder features for (N, H, W) images."""

    def __init__(self, model: UNet, device: str = "cpu", log: dict | None = None):
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.device = device
        self.log = log or {}

    def _batches(self, images: np.ndarray, batch_size: int):
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3:
            raise ValueError(f"expected (N, H, W) images, got {images.shape}")
        for start in range(0, len(images), batch_size):
            x, size = pad_to_multiple(torch.from_numpy(images[start:start + batch_size][:, None]).to(self.device),
                                      self.model.divisor)
            yield x.contiguous(memory_format=torch.channels_last), size

    @torch.inference_mode()
    def predict(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(N, H, W) uint8 label maps (argmax of the four classes)."""
        out = [np.zeros((0,) + np.shape(images)[1:], np.uint8)]
        for x, (h, w) in self._batches(images, batch_size):
            out.append(self.model(x)[:, :, :h, :w].argmax(dim=1).to(torch.uint8).cpu().numpy())
        return np.concatenate(out)

    @torch.inference_mode()
    def features(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(N, D) float32 pooled encoder features (see `UNet.pooled_features`)."""
        out = [np.zeros((0, sum(self.model.config.widths)), np.float32)]
        for x, _ in self._batches(images, batch_size):
            out.append(self.model.pooled_features(x).float().cpu().numpy())
        return np.concatenate(out)


class BatchStream:
    """Batches of slice indices: passes over shuffled slices, or, given a second set of slices and its share of
    every batch, two such streams merged batch by batch (a fixed synthetic:real balance however large each set)."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator, second: np.ndarray | None = None,
                 share: float | None = None):
        self.rng, self.batch_size, self.share = rng, batch_size, share
        second = np.zeros(n, bool) if second is None else np.asarray(second, bool)
        if share is not None and not (0.0 <= share <= 1.0):
            raise ValueError(f"the share of the second set in a batch must be in [0, 1], got {share}")
        self.pools = [np.flatnonzero(~second), np.flatnonzero(second)]
        if share is not None and ((share < 1 and not len(self.pools[0])) or (share > 0 and not len(self.pools[1]))):
            raise ValueError("a batch share was given for a set with no slice")
        if share is None:
            self.pools = [np.arange(n), np.zeros(0, int)]
        self.orders = [rng.permutation(p) if len(p) else p for p in self.pools]
        self.cursors = [0, 0]

    def _take(self, k: int, which: int) -> np.ndarray:
        if k == 0:
            return np.zeros(0, int)
        if self.cursors[which] + k > len(self.orders[which]) and self.cursors[which] > 0:
            self.orders[which], self.cursors[which] = self.rng.permutation(self.pools[which]), 0
        out = self.orders[which][self.cursors[which]:self.cursors[which] + k]
        self.cursors[which] += k
        return out

    def next(self) -> np.ndarray:
        if self.share is None:
            return self._take(self.batch_size, 0)
        exact = self.share * self.batch_size
        k = int(exact) + int(self.rng.random() < exact - int(exact))  # the share holds on average, exactly
        return np.concatenate([self._take(self.batch_size - k, 0), self._take(k, 1)])


def train_segmenter(slices: SliceSet, config: TrainConfig = TrainConfig(), seed: int = 0, device: str = "cpu",
                    quiet: bool = True, desc: str = "segmenter", second: np.ndarray | None = None,
                    second_share: float | None = None) -> Segmenter:
    """Train a U-Net on the annotated slices of `slices`; deterministic for a seed on the CPU, whatever the
    process's thread count: the training runs on one thread there. Two threads sum a convolution's gradient in
    another order, and 400 steps carry that rounding into the weights: the fidelity checks read through the
    real-train segmenter moved by up to 0.03 (`fd_excess_segmenter`, against a threshold of 0.03) and 0.09
    (`precision_ratio`) between 1 and 2 threads (scripts/measure_audit_tolerance.py), more than a reviewer's
    re-audit should be allowed. A second thread bought this training 1.10x (benchmarks/README.md, thread settings)."""
    with one_thread() if str(device).startswith("cpu") else contextlib.nullcontext():
        return _train_segmenter(slices, config, seed, device, quiet, desc, second, second_share)


def _train_segmenter(slices: SliceSet, config: TrainConfig, seed: int, device: str, quiet: bool, desc: str,
                     second: np.ndarray | None, second_share: float | None) -> Segmenter:
    data = slices.labelled()
    if len(data) == 0:
        raise ValueError(f"{desc}: no annotated slice to train on")
    images = torch.from_numpy(data.images[:, None])
    labels = torch.from_numpy(data.labels.astype(np.int64))
    rng = np.random.default_rng(seed)
    # Seed the weights without touching the caller's RNG; the lock keeps concurrent trainings (parallel.py) from
    # seeding the one global generator at the same time.
    with seeded_global_rng(seed):
        model = UNet(config.unet)
    # channels_last: about a third faster for these narrow convolutions on the CPU (oneDNN).
    model.to(device, memory_format=torch.channels_last).train()
    # fused: one kernel per step instead of a dozen per parameter group; 60 steps at 32 px 0.87 -> 0.78 s on 2 cores,
    # the same losses to 1e-8 (benchmarks/README.md)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.15)
    if second is not None:
        second = np.asarray(second, bool)[slices.has_label]
    batches, losses = BatchStream(len(data), config.batch_size, rng, second, second_share), []
    start = time.perf_counter()
    for _ in tqdm(range(config.steps), desc=desc, disable=quiet, leave=False):
        idx = torch.from_numpy(batches.next())
        x, y = augment(images[idx].to(device), labels[idx].to(device), rng, config.max_shift,
                       config.intensity_jitter)
        x, _ = pad_to_multiple(x, model.divisor)
        y, _ = pad_to_multiple(y[:, None], model.divisor)
        loss = dice_ce_loss(model(x.contiguous(memory_format=torch.channels_last)), y[:, 0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    log = {"steps": config.steps, "batch_size": config.batch_size, "seconds": round(time.perf_counter() - start, 2),
           "slices": len(data), "subjects": len(data.subjects), "final_loss": float(np.mean(losses[-10:])),
           "seed": seed}
    return Segmenter(model, device=device, log=log)


DEFAULT_UTILITY_EPOCHS = 6.0  # passes over the real training slices per segmenter (the `utility_epochs` option)
# Steps per segmenter at most: the demo's 100 train patients (2120 slices at 32 px) would otherwise take 1590 steps
# for each of 11 segmenters, 3-4x the utility group's 60 s budget (docs/fidelity-utility-checks.md, "Budget").
DEFAULT_MAX_STEPS = 400
SEGMENTER_KEY = "segmentation.real_train"
SEGMENTER_OPTIONS = (
    Option("utility_epochs", float, DEFAULT_UTILITY_EPOCHS, "passes over the real train slices per audit segmenter",
           low=0.01, high=1000),
    Option("segmenter_batch_size", int, TrainConfig.batch_size, "slices per step of the audit's segmenters",
           low=1, high=4096),
    Option("segmenter_max_steps", int, DEFAULT_MAX_STEPS, "at most this many steps per audit segmenter, whatever "
           "the epochs give (keeps large cohorts inside the audit's time budget)", low=1, high=10_000_000),
    Option("segmenter_workers", int, None, "segmenters trained side by side (default: one per core, 2 per GPU)",
           low=1, high=256),
)
register_options(*SEGMENTER_OPTIONS)


def audit_train_config(ctx) -> TrainConfig:
    """The one training budget of an audit's segmenters: `utility_epochs` passes over the real train slices."""
    epochs = ctx.option("utility_epochs")
    batch = ctx.option("segmenter_batch_size")
    steps = min(steps_for(epochs, len(ctx.train.labelled()), batch), ctx.option("segmenter_max_steps"))
    return TrainConfig(steps=steps, batch_size=batch)


def real_train_segmenter(ctx) -> Segmenter:
    """The segmenter trained on the real train split, trained once per audit and shared (fidelity, utility)."""
    return ctx.shared(SEGMENTER_KEY, lambda: train_segmenter(
        ctx.train, audit_train_config(ctx), seed=ctx.seed, device=ctx.device, quiet=ctx.quiet,
        desc="segmenter: real train"))
