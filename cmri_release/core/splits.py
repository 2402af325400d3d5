"""Patient-level splits, stratified by vendor, deterministic for a seed.

The subject is the unit: all slices and frames of a patient land in the same split, so that no
audit ever compares a patient with itself.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from .errors import CmriError


def largest_remainder(total: int, shares) -> np.ndarray:
    """Integer counts summing to `total` in proportion to `shares` (which sum to 1): each the floor of its exact
    share, the units left over going to the largest fractional parts (ties: the first)."""
    exact = np.asarray(shares, dtype=np.float64) * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts


def _controlled_counts(vendor_sizes: list[int], shares: list[float]) -> np.ndarray:
    """(vendors, splits) patient counts: each vendor divided in the given shares AND each split's total the
    largest-remainder share of the whole cohort (250 patients at 0.4 / 0.4 / 0.2 give 100 / 100 / 50, where
    rounding each vendor on its own gave 100 / 99 / 51). Controlled rounding: every cell is the floor of its
    exact share or one more; the extra units go to the largest fractional parts that both the vendor and the
    split still need."""
    sizes = np.asarray(vendor_sizes, dtype=int)
    exact = sizes[:, None] * np.asarray(shares, dtype=np.float64)[None, :]
    counts = np.floor(exact + 1e-9).astype(int)
    row_left = sizes - counts.sum(axis=1)
    col_left = largest_remainder(int(sizes.sum()), shares) - counts.sum(axis=0)
    frac = (exact - counts).ravel()
    for cell in np.argsort(-frac, kind="stable"):
        v, k = divmod(int(cell), len(shares))
        if row_left[v] > 0 and col_left[k] > 0:
            counts[v, k] += 1
            row_left[v] -= 1
            col_left[k] -= 1
    for v in np.flatnonzero(row_left > 0):  # rare: the greedy pass left a vendor short; any needy split takes it
        while row_left[v] > 0:
            k = int(np.flatnonzero(col_left > 0)[0])
            counts[v, k] += 1
            row_left[v] -= 1
            col_left[k] -= 1
    return counts


def split_subjects(subject_vendor: dict[str, str], fractions: dict[str, float], seed: int, *,
                   exact_totals: bool = True) -> dict[str, list[str]]:
    """Assign each subject to one split; each vendor is divided in the given proportions.

    `fractions` maps split name -> share (they must sum to 1). Within each vendor, subjects are
    shuffled with `seed` and cut by controlled rounding (`_controlled_counts`), so every split gets its
    fair share of every vendor and its exact share of the whole cohort. `exact_totals=False` rounds each
    vendor on its own (every vendor with a share of at least half a patient is then represented).
    """
    if not fractions or any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise CmriError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    by_vendor = defaultdict(list)
    for sid, vendor in sorted(subject_vendor.items()):
        by_vendor[vendor].append(sid)
    names = list(fractions)
    vendors = sorted(by_vendor)
    sizes, shares = [len(by_vendor[v]) for v in vendors], [fractions[n] for n in names]
    counts = (_controlled_counts(sizes, shares) if exact_totals else
              np.stack([largest_remainder(size, shares) for size in sizes]))
    out = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    for vendor, row in zip(vendors, counts):
        ids = by_vendor[vendor]
        order = rng.permutation(len(ids))
        start = 0
        for name, count in zip(names, row):
            out[name].extend(ids[j] for j in order[start:start + count])
            start += count
    for name in names:
        if fractions[name] > 0 and not out[name]:
            raise CmriError(f"the cohort has {len(subject_vendor)} subjects, too few for a non-empty "
                            f"'{name}' split with fractions {fractions}")
        out[name].sort()
    return out
