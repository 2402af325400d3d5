"""Distribution distances between feature sets: Frechet distance, KID, and subject-level resampling.

Plain functions (the fidelity auditors wrap them). FD and KID both grow with the sample size's
noise, so the auditors never read them alone: they compare synthetic-vs-train with
holdout-vs-train at the same number of slices (`matched_sample`) and report the ratio.
"""
from __future__ import annotations

import numpy as np


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least two (N, D) feature rows, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_from_stats(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^1/2) (Dowson & Landau; Heusel et al.'s FID formula).

    tr((C1 C2)^1/2) is computed as the sum of square roots of the eigenvalues of the symmetric
    C1^1/2 C2 C1^1/2 (same spectrum), which stays real and stable when a covariance is singular
    (fewer slices than dimensions), where a general `sqrtm` returns complex noise.
    """
    mu1, mu2 = np.asarray(mu1, float), np.asarray(mu2, float)
    cov1, cov2 = np.atleast_2d(cov1), np.atleast_2d(cov2)
    root1 = _sqrt_psd(cov1)
    middle = root1 @ cov2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt, 0.0))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets."""
    return frechet_from_stats(*mean_cov(a), *mean_cov(b))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / D + 1)^3, the KID kernel of Binkowski et al. (2018)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD^2: within-set means leave the diagonal out; may be slightly negative."""
    m, n = len(kxx), len(kyy)
    if m < 2 or n < 2:
        raise ValueError("KID needs at least two samples in each set")
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kernel_inception_distance(a: np.ndarray, b: np.ndarray) -> float:
    """KID between two (N, D) feature sets (unbiased, polynomial kernel), in any feature space."""
    return mmd2_from_kernels(polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b))


def subject_groups(subject_ids) -> list[np.ndarray]:
    """Slice indices grouped by subject, in order of first appearance."""
    ids = np.asarray(subject_ids)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == k) for k in order]


def matched_sample(groups: list[np.ndarray], n: int, rng: np.random.Generator, replace: bool) -> np.ndarray:
    """Slice indices of whole subjects drawn at random until `n` slices, cut at `n`.

    Subjects, not slices, are the unit drawn (a patient's slices are not independent). Without
    replacement the draw stops when the subjects run out.
    """
    picked, total = [], 0
    order = iter(rng.permutation(len(groups))) if not replace else None
    while total < n:
        if replace:
            k = int(rng.integers(len(groups)))
        else:
            k = next(order, None)
            if k is None:
                break
        picked.append(groups[k])
        total += len(groups[k])
    return np.concatenate(picked)[:n]


def percentile_interval(values, level: float = 0.95) -> list[float]:
    """The central `level` percentile interval of bootstrap replicates (NaN replicates dropped)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return [float("nan"), float("nan")]
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(arr, tail)), float(np.percentile(arr, 100 - tail))]
