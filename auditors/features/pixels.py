"""Pixel feature space: downsampled slices as vectors whose inner product is the Pearson correlation.

Downsampling (area averaging) removes the noise and the exact grid a copy would differ by; centring
and L2-normalising each vector makes the inner product of two vectors their Pearson correlation,
which is what copy detectors in the literature threshold (Akbar et al.; Dar et al.).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class PixelFeatures:
    """`transform(images (N, H, W)) -> (N, size*size)` float32, centred and L2-normalised per row."""

    name = "pixels"

    def __init__(self, size: int = 32, batch_size: int = 4096):
        if size < 4:
            raise ValueError(f"pixel feature size must be at least 4, got {size}")
        self.size = int(size)
        self.batch_size = int(batch_size)

    @property
    def dim(self) -> int:
        return self.size * self.size

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "similarity": "Pearson correlation",
                "how": f"area-downsampled to {self.size}x{self.size}, centred and L2-normalised per slice"}

    def transform(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3:
            raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(images[start:start + self.batch_size])
            out[start:start + len(batch)] = downsample(batch, self.size).reshape(len(batch), -1).numpy()
        return centre_and_normalise(out)


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average (N, H, W) to (N, size, size); smaller images are interpolated bilinearly."""
    x = images[:, None]
    if images.shape[-1] >= size:
        x = F.adaptive_avg_pool2d(x, size)
    else:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[:, 0]


def centre_and_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows minus their mean, divided by their norm (in place); a constant row stays all zeros."""
    vectors -= vectors.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 1e-12)
    vectors[(norms <= 1e-12)[:, 0]] = 0.0
    return vectors


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their norm (in place); a zero row stays zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 1e-12)
    vectors[(norms <= 1e-12)[:, 0]] = 0.0
    return vectors
