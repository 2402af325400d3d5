"""Precision, recall, density and coverage (Naeem et al., ICML 2020), memory-bounded.

Each real sample owns a ball reaching its k-th nearest real neighbour; each fake sample one
reaching its k-th nearest fake neighbour. Precision: share of fakes inside some real ball.
Recall: share of reals inside some fake ball. Density: real balls containing each fake, over k,
averaged (about 1 when the sets match, above 1 when fakes crowd the dense real regions).
Coverage: share of real balls holding at least one fake; it falls when the generator drops
modes, which makes it the diversity check.

Same definitions and strict inequalities as the authors' `prdc` package (tested against it),
but distances are computed in row chunks (scikit-learn's `pairwise_distances_chunked`) so the
N x M matrix is never held whole.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import pairwise_distances_chunked
from sklearn.neighbors import NearestNeighbors


def kth_neighbour_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (the row itself is neighbour 0)."""
    if len(features) <= k:
        raise ValueError(f"PRDC with k={k} needs more than {k} samples per set, got {len(features)}")
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return distances[:, k]


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    real_radii = kth_neighbour_radii(real, k)
    fake_radii = kth_neighbour_radii(fake, k)
    inside_real = []  # per fake: number of real balls it lies in
    real_recalled = np.zeros(len(real), dtype=bool)  # per real: lies in some fake ball
    nearest_fake = np.full(len(real), np.inf)  # per real: distance to its nearest fake

    def reduce(chunk, chunk_start):  # chunk: fake rows [chunk_start, ...) x all reals
        rows = slice(chunk_start, chunk_start + len(chunk))
        inside_real.append((chunk < real_radii[None, :]).sum(axis=1))
        real_recalled[:] |= (chunk < fake_radii[rows, None]).any(axis=0)
        np.minimum(nearest_fake, chunk.min(axis=0), out=nearest_fake)
        return None

    for _ in pairwise_distances_chunked(fake, real, reduce_func=reduce):
        pass
    counts = np.concatenate(inside_real)
    return {
        "precision": float((counts > 0).mean()),
        "recall": float(real_recalled.mean()),
        "density": float(counts.mean() / k),
        "coverage": float((nearest_fake < real_radii).mean()),
    }
