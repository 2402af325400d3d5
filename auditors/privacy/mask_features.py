"""Label maps as vectors: the mask channel of a release audited like its images.

The mask generator (a shape model fitted on the training patients) releases label maps of its own, and a
label map is patient data (the shape of one heart). Each map becomes its one-hot foreground channels
(RV, MYO, LV), area-downsampled, centred and L2-normalised, so that an inner product is the Pearson
correlation of two maps and FAISS or a matrix product finds the nearest map. An empty map is a zero
vector: it resembles nothing.
"""
from __future__ import annotations

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
