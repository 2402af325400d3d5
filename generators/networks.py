"""The networks every generator shares: one small conditional U-Net family, a VAE encoder, a patch discriminator.

Design constraints, and why:
- GroupNorm, never BatchNorm: per-sample gradients (Opacus DP-SGD) need layers that do not mix samples.
- Upsample + Conv2d, never ConvTranspose2d: Opacus' ExpandedWeights cannot handle conv_transpose2d.
- No spectral norm in the discriminator: its power iteration state breaks per-sample gradients.
Conditioning: the label map enters as a one-hot concatenated to the input and, optionally, as a SPADE-like
modulation of every normalisation (so the anatomy steers deep layers too); the vendor is a learned embedding that,
added to a sinusoidal time embedding, scales and shifts every residual block (FiLM).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from cmri_release.core.labels import NUM_CLASSES

# Channel widths per U-Net level. "compact" trains at ~tens of slices/s at 64 px on 2 CPU cores; "large" is for a GPU
# or 128 px.
PRESETS: dict[str, dict] = {
    "tiny": {"channels": (8, 16), "blocks": 1, "emb_dim": 32},  # contract tests only
    "compact": {"channels": (16, 32, 64, 64), "blocks": 1, "emb_dim": 128},
    "large": {"channels": (64, 128, 256, 256), "blocks": 2, "emb_dim": 256},
}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; known: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def _groups(channels: int) -> int:
    """The largest of 8, 4, 2, 1 that divides `channels` (GroupNorm needs a divisor)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) sin/cos features over geometric frequencies (as in the Transformer/DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class PreparedCondition:
    """A batch of one-hot label maps whose SPADE modulations are computed once, then reused.

    A sampler evaluates the network 5-50 times on the same label maps; the modulation (a resize and a 3x3 conv per
    normalisation layer) depends on the map only, so recomputing it each time wasted about a tenth of sampling.
    For inference only: the cached tensors belong to the first forward pass that needed them.
    """

    def __init__(self, onehot: torch.Tensor):
        self.onehot = onehot
        self._resized: dict[tuple[int, int], torch.Tensor] = {}
        self._modulations: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def resized(self, size) -> torch.Tensor:
        key = tuple(int(s) for s in size)
        if key not in self._resized:
            self._resized[key] = _resize_condition(self.onehot, key)
        return self._resized[key]

    def modulation(self, norm: "SpadeNorm", size) -> tuple[torch.Tensor, torch.Tensor]:
        key = id(norm)
        if key not in self._modulations:
            self._modulations[key] = norm.scale_shift(self.resized(size))
        return self._modulations[key]


def _resize_condition(onehot: torch.Tensor, size) -> torch.Tensor:
    if tuple(onehot.shape[-2:]) == tuple(size):
        return onehot
    # Nearest keeps the one-hot crisp at coarse levels.
    return F.interpolate(onehot, size=tuple(size), mode="nearest")


def condition_tensor(cond) -> torch.Tensor:
    return cond.onehot if isinstance(cond, PreparedCondition) else cond


class SpadeNorm(nn.Module):
    """GroupNorm whose scale and shift come from the label map at this resolution (SPADE, Park et al. 2019)."""

    def __init__(self, channels: int, cond_channels: int, spade: bool):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels, affine=not spade)
        self.modulation = nn.Conv2d(cond_channels, 2 * channels, 3, padding=1) if spade else None
        if self.modulation is not None:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def scale_shift(self, resized_cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta) from the label map at this layer's resolution."""
        gamma, beta = self.modulation(resized_cond).chunk(2, dim=1)
        return 1 + gamma, beta

    def forward(self, h: torch.Tensor, cond) -> torch.Tensor:
        h = self.norm(h)
        if self.modulation is None:
            return h
        if isinstance(cond, PreparedCondition):
            scale, shift = cond.modulation(self, h.shape[-2:])
        else:
            scale, shift = self.scale_shift(_resize_condition(cond, h.shape[-2:]))
        return torch.addcmul(shift, h, scale)  # h * (1 + gamma) + beta in one pass


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, cond_channels: int, spade: bool):
        super().__init__()
        self.norm1 = SpadeNorm(c_in, cond_channels, spade)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = SpadeNorm(c_out, cond_channels, spade)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h, emb, cond):
        x = self.conv1(F.silu(self.norm1(h, cond)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        x = torch.addcmul(shift, self.norm2(x, cond), 1 + scale)
        x = self.conv2(F.silu(x))
        return x + self.skip(h)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv (DP-compatible, unlike ConvTranspose2d)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h):
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


class CondUNet(nn.Module):
    """U-Net on (input channels + one-hot label map), steered by a vendor embedding and, optionally, a time.

    `n_vendors` real vendors get indices 0..n_vendors-1; index n_vendors is the "no vendor" token used for
    classifier-free guidance and for vendors the model never saw. An all-zero one-hot is the "no label map" token.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, n_vendors: int = 1,
                 channels=(32, 64, 96), blocks: int = 1, emb_dim: int = 128, time_conditioned: bool = True,
                 spade: bool = True, cond_channels: int = NUM_CLASSES):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        self.time_conditioned = time_conditioned
        self.emb_dim = emb_dim
        self.n_levels = len(channels)
        self.vendor_embedding = nn.Embedding(n_vendors + 1, emb_dim)
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)) \
            if time_conditioned else None
        self.emb_out = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(in_channels + cond_channels, channels[0], 3, padding=1)

        def res(c_in, c_out):
            return ResBlock(c_in, c_out, emb_dim, cond_channels, spade)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = []
        c = channels[0]
        for level, width in enumerate(channels):
            stage = nn.ModuleList()
            for _ in range(blocks):
                stage.append(res(c, width))
                c = width
            self.down.append(stage)
            skips.append(c)
            if level < self.n_levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([res(c, c), res(c, c)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(self.n_levels)):
            width = channels[level]
            stage = nn.ModuleList()
            for i in range(blocks):
                stage.append(res(c + skips[level] if i == 0 else c, width))
                c = width
            self.up.append(stage)
            if level > 0:
                self.upsample.append(Upsample(c))
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = nn.Conv2d(c, out_channels, 3, padding=1)

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (self.n_levels - 1)

    def embed(self, vendor: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        emb = self.vendor_embedding(vendor)
        if self.time_conditioned:
            if t is None:
                raise ValueError("this network is time-conditioned: pass t")
            emb = emb + self.time_mlp(sinusoidal_embedding(t, self.emb_dim))
        return self.emb_out(emb)

    @staticmethod
    def prepare(cond: torch.Tensor) -> PreparedCondition:
        """Label maps to evaluate the network on many times (a sampler's steps): modulations computed once."""
        return PreparedCondition(cond)

    def forward(self, x: torch.Tensor, cond, vendor: torch.Tensor, t: torch.Tensor | None = None):
        """`cond`: the (B, classes, H, W) one-hot, or the same wrapped by `prepare` when sampling."""
        if x.shape[-1] % self.divisor or x.shape[-2] % self.divisor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be a multiple of {self.divisor}")
        emb = self.embed(vendor, t)
        h = self.stem(torch.cat([x, condition_tensor(cond)], dim=1))
        skips = []
        for level, stage in enumerate(self.down):
            for block in stage:
                h = block(h, emb, cond)
            skips.append(h)
            if level < self.n_levels - 1:
                h = self.downsample[level](h)
        for block in self.mid:
            h = block(h, emb, cond)
        for i, stage in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in stage:
                h = block(h, emb, cond)
            if i < self.n_levels - 1:
                h = self.upsample[i](h)
        return self.out(F.silu(self.out_norm(h)))


class ConvEncoder(nn.Module):
    """Image + one-hot label map -> (mean, log-variance) of a spatial latent at 1 / 2**len(channels) resolution."""

    def __init__(self, in_channels: int = 1, latent_channels: int = 4, channels=(16, 32, 64),
                 cond_channels: int = NUM_CLASSES):
        super().__init__()
        layers = []
        c = in_channels + cond_channels
        for width in channels:
            layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.GroupNorm(_groups(width), width), nn.SiLU()]
            c = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, 2 * latent_channels, 3, padding=1)
        self.reduction = 2 ** len(channels)

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this."""
        return self.reduction

    def forward(self, x, cond):
        return self.head(self.body(torch.cat([x, cond], dim=1))).chunk(2, dim=1)


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix): a map of real/fake logits over overlapping patches of (image, label map).

    The vendor enters as a projection term (Miyato & Koyama 2018): logit += <embedding(vendor), features>.
    GroupNorm, no spectral norm (Opacus).
    """

    def __init__(self, in_channels: int = 1, n_vendors: int = 1, channels=(32, 64, 128),
                 cond_channels: int = NUM_CLASSES):
        super().__init__()
        layers = []
        c = in_channels + cond_channels
        for i, width in enumerate(channels):
            layers.append(nn.Conv2d(c, width, 4, stride=2 if i < len(channels) - 1 else 1, padding=1))
            if i > 0:
                layers.append(nn.GroupNorm(_groups(width), width))
            layers.append(nn.LeakyReLU(0.2))
            c = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, 1, 3, padding=1)
        self.vendor_embedding = nn.Embedding(n_vendors + 1, c)

    def forward(self, x, cond, vendor):
        h = self.body(torch.cat([x, cond], dim=1))
        projection = (h * self.vendor_embedding(vendor)[:, :, None, None]).sum(dim=1, keepdim=True)
        return self.head(h) + projection / math.sqrt(h.shape[1])
