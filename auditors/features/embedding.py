"""Embedding feature space: a small CNN trained self-supervised on the TRAIN split only.

A copy of a patient's slice stays a copy after a shift of a few pixels, a small rotation, a flip, an
intensity rescaling or gamma, or added noise; a new patient does not become a copy through any of
them. The encoder is therefore trained with a SimCLR (NT-Xent) loss to map two such random views of
the same slice together and views of different slices apart, in the manner of Dar et al. (arXiv
2402.01054, whose encoder pulls a slice towards its flipped and rotated versions). Training only on
the training split keeps holdout and synthetic slices unseen, like any query. The fidelity auditors
reuse the same embedding for FD/KID, so `Embedder.transform` is a stable API.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .pixels import downsample, l2_normalise


@dataclass(frozen=True)
class EmbeddingConfig:
    dim: int = 64  # embedding dimension
    input_size: int = 64  # slices are area-downsampled to at most this many pixels
    width: int = 16  # channels of the first convolution
    steps: int = 150  # contrastive training steps (about 10-30 s of CPU at 64 px on an idle 2-core machine)
    batch_size: int = 128  # slices per step (two views each)
    lr: float = 2e-3
    temperature: float = 0.2
    max_shift_px: float = 4.0  # at 64 px; scaled with the input size
    max_rotation_deg: float = 10.0
    max_scale: float = 0.05
    intensity_scale: float = 0.2  # image * U(1 - s, 1 + s)
    max_gamma: float = 1.4  # gamma in [1 / max_gamma, max_gamma]
    max_noise: float = 0.08  # Gaussian noise up to this fraction of the slice's standard deviation

    @classmethod
    def from_options(cls, ctx) -> "EmbeddingConfig":
        """Options named `embedding_<field>` (e.g. `embedding_steps`, declared by `embedding_options`)."""
        return cls(**{f.name: ctx.option(f"embedding_{f.name}") for f in fields(cls)})


def embedding_options():
    """One declared audit option per EmbeddingConfig field, typed and defaulted from the dataclass."""
    from auditors.base import Option

    return [Option(f"embedding_{f.name}", f.type if f.type in (int, float) else {"int": int, "float": float}[f.type],
                   f.default, f"embedding network setting `{f.name}`", low=0) for f in fields(EmbeddingConfig)]


class Encoder(nn.Module):
    """Stride-2 convolutions down to 8x8, pooled to 4x4 (keeps the coarse layout), then a linear map to `dim`.

    Every convolution halves the grid, which keeps training at 64 px within seconds on a CPU.
    """

    def __init__(self, input_size: int, dim: int, width: int):
        super().__init__()
        layers, channels, size = [], 1, input_size
        while size > 8 or not layers:
            out = width if not layers else min(channels * 2, width * 4)
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GroupNorm(4, out), nn.SiLU()]
            channels, size = out, (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(channels * 16, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.adaptive_avg_pool2d(self.features(x), 4).flatten(1))


def augment(x: torch.Tensor, config: EmbeddingConfig, gen: torch.Generator) -> torch.Tensor:
    """One random view per slice of x (B, 1, S, S): affine (shift, rotation, scale, flips), gamma, rescale, noise."""
    b, size = x.shape[0], x.shape[-1]

    def uniform(low, high):
        return low + (high - low) * torch.rand(b, generator=gen)

    angle = uniform(-1, 1) * math.radians(config.max_rotation_deg)
    scale = 1 + uniform(-1, 1) * config.max_scale
    flip_x = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * config.max_shift_px * (size / 64) * 2 / size
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip_x, -sin * flip_y, shift[:, 0]], 1),
                         torch.stack([sin * flip_x, cos * flip_y, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Gamma on the slice's own [min, max] range, so it works for percentile and z-score normalisation alike.
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    span = (x.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-6)
    gamma = torch.exp(uniform(-1, 1) * math.log(config.max_gamma)).view(b, 1, 1, 1)
    x = low + span * ((x - low) / span).clamp(0, 1) ** gamma
    x = x * (1 + uniform(-1, 1) * config.intensity_scale).view(b, 1, 1, 1)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    noise = uniform(0, config.max_noise).view(b, 1, 1, 1) * std
    return x + noise * torch.randn(x.shape, generator=gen)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy: each view must find its partner among 2B - 1 others."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = len(z1)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return F.cross_entropy(sim, target)


class Embedder:
    """A trained encoder: `transform(images (N, H, W)) -> (N, dim)` float32, L2-normalised (cosine = inner product)."""

    name = "embedding"

    def __init__(self, encoder: Encoder, config: EmbeddingConfig, input_size: int, log: dict):
        self.encoder = encoder.eval()
        self.config = config
        self.input_size = input_size
        self.log = log

    @property
    def dim(self) -> int:
        return self.config.dim

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "similarity": "cosine", "input_size": self.input_size,
                "how": "CNN trained self-supervised (SimCLR NT-Xent) on the training split only, invariant to "
                       "shifts, small rotations, flips, intensity rescaling, gamma and noise",
                "config": asdict(self.config), "training": self.log}

    @torch.no_grad()
    def transform(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3:
            raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            batch = downsample(torch.from_numpy(images[start:start + batch_size]), self.input_size)[:, None]
            out[start:start + len(batch)] = self.encoder(batch).numpy()
        return l2_normalise(out)


def train_embedder(images: np.ndarray, config: EmbeddingConfig = EmbeddingConfig(), seed: int = 0,
                   quiet: bool = False) -> Embedder:
    """Train the encoder on `images` (the training split's slices); deterministic for a seed on one machine."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or len(images) < 2:
        raise ValueError(f"the embedding needs at least 2 training slices (N, H, W), got shape {images.shape}")
    input_size = min(images.shape[-1], config.input_size)
    data = downsample(torch.from_numpy(images), input_size)[:, None].contiguous()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = Encoder(input_size, config.dim, config.width)
        head = nn.Sequential(nn.Linear(config.dim, config.dim), nn.SiLU(), nn.Linear(config.dim, config.dim))
    params = list(encoder.parameters()) + list(head.parameters())
    optimiser = torch.optim.Adam(params, lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(config.steps, 1))
    batch = min(config.batch_size, len(data))
    start, losses = time.perf_counter(), []
    encoder.train()
    for _ in tqdm(range(config.steps), desc="embedding", disable=quiet, leave=False):
        x = data[torch.randperm(len(data), generator=gen)[:batch]]
        loss = nt_xent(head(encoder(augment(x, config, gen))), head(encoder(augment(x, config, gen))),
                       config.temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    log = {"steps": config.steps, "seconds": round(time.perf_counter() - start, 3), "train_slices": len(data),
           "loss_first": losses[0] if losses else None, "loss_last": float(np.mean(losses[-10:])) if losses else None,
           "seed": seed}
    return Embedder(encoder, config, input_size, log)


def get_embedder(ctx) -> Embedder:
    """The audit's embedding, trained once per AuditContext on `ctx.train` and shared by every auditor."""
    return ctx.shared("embedding", lambda: train_embedder(ctx.train.images, EmbeddingConfig.from_options(ctx),
                                                         seed=ctx.seed, quiet=ctx.quiet))
