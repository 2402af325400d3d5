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


def multiplicities(draws: list[np.ndarray], n_rows: int) -> np.ndarray:
    """(R, n_rows) float weights: how many times each row appears in each of R drawn index arrays."""
    if not len(draws):
        return np.zeros((0, n_rows))
    return np.stack([np.bincount(d, minlength=n_rows) for d in draws]).astype(np.float64)


def weighted_mean_cov(x: np.ndarray, weights: np.ndarray, groups: list[np.ndarray] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(R, D) means and (R, D, D) covariances (ddof 1) of the samples that repeat row i of `x` weights[r, i] times.

    The same as `mean_cov(x[idx])` for each replicate's index array, without building the (n, D) sample. With
    `groups` (row indices per subject, as `subject_groups` gives), whole-subject copies are counted from each
    group's second moment, computed once, and only the rows left over (a subject cut short) are summed row by row.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n = w.sum(axis=1)
    if (n < 2).any():
        raise ValueError("need at least two (N, D) feature rows per replicate")
    d = x.shape[1]
    shift = x.mean(axis=0)
    xc = x - shift  # centred once: the second moment below loses no precision to a large mean
    means = w @ xc / n[:, None]
    if groups is None:
        copies, rest = np.zeros((len(w), 0)), w
        group_moments = np.zeros((0, d * d))
    else:
        copies = np.stack([w[:, g].min(axis=1) for g in groups], axis=1)  # (R, G) whole copies of each group
        rest = w.copy()
        for k, g in enumerate(groups):
            rest[:, g] -= copies[:, k:k + 1]
        group_moments = np.stack([(xc[g].T @ xc[g]).ravel() for g in groups])  # (G, D*D)
    covs = np.empty((len(w), d, d))
    for start in range(0, len(w), 32):  # bounded memory: 32 (D, D) matrices at a time
        covs[start:start + 32] = (copies[start:start + 32] @ group_moments).reshape(-1, d, d)
    for r in range(len(w)):
        rows = np.flatnonzero(rest[r])
        if len(rows):
            covs[r] += (xc[rows].T * rest[r, rows]) @ xc[rows]
        covs[r] = (covs[r] - n[r] * np.outer(means[r], means[r])) / (n[r] - 1)
    return means + shift, covs


def frechet_to_reference(mu_ref: np.ndarray, cov_ref: np.ndarray):
    """FD(., reference) for many (mu, cov) against one fixed reference Gaussian: its square root is taken once.

    tr((C C_ref)^1/2) is the sum of square roots of the eigenvalues of C_ref^1/2 C C_ref^1/2 (the same spectrum
    as C^1/2 C_ref C^1/2 in `frechet_from_stats`), so each call costs one symmetric eigenvalue problem.
    """
    mu_ref = np.asarray(mu_ref, float)
    cov_ref = np.atleast_2d(cov_ref)
    root = _sqrt_psd(cov_ref)
    tr_ref = np.trace(cov_ref)

    def fd(mu, cov) -> float:
        middle = root @ cov @ root
        eig = np.linalg.eigvalsh((middle + middle.T) / 2)
        diff = np.asarray(mu, float) - mu_ref
        return float(max(diff @ diff + np.trace(cov) + tr_ref - 2 * np.sqrt(np.clip(eig, 0, None)).sum(), 0.0))
    return fd


def weighted_kid(x: np.ndarray, weights: np.ndarray, reference: np.ndarray, k_ref: np.ndarray | None = None,
                 block: int = 1024) -> np.ndarray:
    """(R,) KID(sample_r, reference) for the samples that repeat row i of `x` weights[r, i] times.

    The same as `kernel_inception_distance(x[idx], reference)` per replicate: a sample's within-set sum of
    k(x_a, x_b) over positions a != b is w K w - w . diag(K) (a row drawn twice pairs with its copy), its cross
    sum with the reference is w . (K_xref 1). K is built block by block once for all replicates, never stored.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    m = w.sum(axis=1)
    if (m < 2).any() or len(reference) < 2:
        raise ValueError("KID needs at least two samples in each set")
    k_ref = polynomial_kernel(reference, reference) if k_ref is None else k_ref
    n = len(reference)
    within_y = (k_ref.sum() - np.trace(k_ref)) / (n * (n - 1))
    wkw = np.zeros(len(w))
    cross = np.empty(len(x))
    diag = np.empty(len(x))
    for start in range(0, len(x), block):
        rows = slice(start, min(start + block, len(x)))
        k_block = polynomial_kernel(x[rows], x)  # (b, N)
        wkw += np.einsum("rb,rb->r", w[:, rows], w @ k_block.T)
        diag[rows] = np.einsum("ii->i", k_block[:, rows])
        cross[rows] = polynomial_kernel(x[rows], reference).sum(axis=1)
    within_x = (wkw - w @ diag) / (m * (m - 1))
    return within_x + within_y - 2 * (w @ cross) / (m * n)
