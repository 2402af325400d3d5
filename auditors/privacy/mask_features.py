"""Label maps as vectors and as images: the mask channel of a release audited like its images.

The mask generator (a shape model fitted on the training patients) releases label maps of its own, and a
label map is patient data (the shape of one heart). As vectors (`mask_vectors`, for the closer-to-train share):
each map becomes its one-hot foreground channels (RV, MYO, LV), area-downsampled, centred and L2-normalised, so
that an inner product is the Pearson correlation of two maps and FAISS or a matrix product finds the nearest
map; an empty map is a zero vector: it resembles nothing. As images (`mask_images`, for the copy search): one
grey level per structure, blurred, so that the shift, rotation and registration search of the images finds a
map copied under a transform; the copy search reads each map both as it is and `centred` on its foreground.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from auditors.features.pixels import centre_and_normalise

FOREGROUND = (1, 2, 3)  # RV, MYO, LV (ACDC)


def mask_vectors(labels: np.ndarray, size: int = 16, batch: int = 4096) -> np.ndarray:
    """(N, 3 size^2) float32 vectors of (N, H, W) integer label maps."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"label maps must be (N, H, W), got shape {labels.shape}")
    out = np.empty((len(labels), len(FOREGROUND) * size * size), dtype=np.float32)
    for start in range(0, len(labels), batch):
        x = torch.from_numpy(labels[start:start + batch].astype(np.int64))
        onehot = torch.stack([(x == c).float() for c in FOREGROUND], dim=1)
        out[start:start + len(x)] = F.adaptive_avg_pool2d(onehot, size).reshape(len(x), -1).numpy()
    return centre_and_normalise(out)


MASK_LEVELS = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)  # background, RV, MYO, LV
MASK_BLUR_PX = 0.7


def centred(labels: np.ndarray) -> np.ndarray:
    """(N, H, W) label maps each moved by whole pixels (background coming in) so that the centroid of its foreground
    lies within half a pixel of the map's centre; a map without foreground is kept. A label map has an anatomical
    origin that an image lacks: centred, a map copied under a whole-pixel move, a mirror or a quarter turn is its
    source again up to a whole-pixel move (the rounding), which the copy search undoes exactly (measured 2026-12-07
    on the phantom at 32 px: 10 training patients' maps mirrored, or turned by 90 degrees, and moved by (5, -4) px
    under new images passed with 0 confirmed uncentred, the maps' translation search ranking look-alike hearts above
    the source). Whole pixels, not a sub-pixel shift: the copy search then also reads the maps as they are (a turn
    about the field of view's centre is exact there), and sub-pixel centring lifts real new hearts' scores more
    than it helps copies (measured: maps turned by 20 degrees, 0 of 10 confirmed with it)."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"label maps must be (N, H, W), got shape {labels.shape}")
    out = np.zeros_like(labels)
    h, w = labels.shape[-2:]
    for i, x in enumerate(labels):
        ys, xs = np.nonzero(x)
        if not len(ys):
            out[i] = x
            continue
        dy, dx = int(round((h - 1) / 2 - ys.mean())), int(round((w - 1) / 2 - xs.mean()))
        src = x[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
        out[i, max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def mask_images(labels: np.ndarray, size: int = 32, blur_px: float = MASK_BLUR_PX, batch: int = 4096) -> np.ndarray:
    """(N, size, size) float32 images of (N, H, W) label maps, for the pixel copy search (robust_match.py): each
    structure at its own level, area-resampled to `size`, then a Gaussian blur of `blur_px`. The blur matters: a
    map turned with nearest-neighbour labels has jagged edges that cost a copy more correlation (0.96-0.99) than
    separates it from real new hearts (0.978 at most, phantom); blurred at 0.7 px, copies turned by 20 degrees score
    0.9976-0.9985 against the real new patients' 0.9948 at most (benchmarks/privacy_copy_variants.py)."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"label maps must be (N, H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(MASK_LEVELS)):
        raise ValueError(f"label values must lie in 0..{len(MASK_LEVELS) - 1}, got {labels.min()}..{labels.max()}")
    radius = max(1, int(math.ceil(3 * blur_px)))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / blur_px) ** 2) if blur_px > 0 else (taps == 0).float()
    kernel = kernel / kernel.sum()
    out = np.empty((len(labels), size, size), dtype=np.float32)
    levels = torch.from_numpy(MASK_LEVELS)
    for start in range(0, len(labels), batch):
        x = levels[torch.from_numpy(labels[start:start + batch].astype(np.int64))][:, None]
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")
        x = F.pad(x, (radius,) * 4, mode="replicate")  # separable blur; edges continue the border
        x = F.conv2d(F.conv2d(x, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
        out[start:start + len(x)] = x[:, 0].numpy()
    return out
