"""A compact 2D U-Net with GroupNorm for the four ACDC classes (background, RV, MYO, LV).

Small on purpose: the audit trains several of these on a CPU (TRTR, TSTR, leave-one-vendor-out,
low-data), so the default widths 8/16/32/64 give about 0.2M parameters. GroupNorm keeps batch
statistics out of the model, so a prediction does not depend on which slices share a batch.
Upsampling is nearest-neighbour + conv rather than a transposed conv (no checkerboard artefacts).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cmri_release.core.labels import NUM_CLASSES


@dataclass(frozen=True)
class UNetConfig:
    widths: tuple[int, ...] = (8, 16, 32, 64)  # channels per level; the last is the bottleneck
    in_channels: int = 1
    num_classes: int = NUM_CLASSES
    groups: int = 4  # GroupNorm groups (each width must be divisible by it)

    def __post_init__(self):
        if len(self.widths) < 2:
            raise ValueError("the U-Net needs at least two levels")
        bad = [w for w in self.widths if w % self.groups]
        if bad:
            raise ValueError(f"widths {bad} are not divisible by groups={self.groups}")

    def to_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.SiLU(),
    )


class UNet(nn.Module):
    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        w, g = config.widths, config.groups
        self.down = nn.ModuleList([_block(config.in_channels, w[0], g)]
                                  + [_block(w[i - 1], w[i], g) for i in range(1, len(w))])
        self.up = nn.ModuleList([nn.Conv2d(w[i], w[i - 1], 3, padding=1) for i in range(len(w) - 1, 0, -1)])
        self.merge = nn.ModuleList([_block(2 * w[i - 1], w[i - 1], g) for i in range(len(w) - 1, 0, -1)])
        self.head = nn.Conv2d(w[0], config.num_classes, 1)

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (one halving per level below the top)."""
        return 2 ** (len(self.config.widths) - 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, top level first, bottleneck last."""
        if x.shape[-1] % self.divisor or x.shape[-2] % self.divisor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be a multiple of {self.divisor}")
        skips = [self.down[0](x)]
        for block in self.down[1:]:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        h = skips[-1]
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            h = up(F.interpolate(h, scale_factor=2, mode="nearest"))
            h = merge(torch.cat([h, skip], dim=1))
        return self.head(h)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, sum(widths)): each encoder level averaged over space, the segmenter's own feature space.

        Every level is kept, not only the bottleneck, so that low-level intensity and texture
        (what a generator most easily gets wrong) weigh in beside the anatomy.
        """
        return torch.cat([f.mean(dim=(2, 3)) for f in self.encode(x)], dim=1)
