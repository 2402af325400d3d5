"""Patient-level splits, stratified by vendor, deterministic for a seed.

The subject is the unit: all slices and frames of a patient land in the same split, so that no
audit ever compares a patient with itself.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from .errors import CmriError


def split_subjects(subject_vendor: dict[str, str], fractions: dict[str, float], seed: int) -> dict[str, list[str]]:
    """Assign each subject to one split; each vendor is divided in the given proportions.

    `fractions` maps split name -> share (they must sum to 1). Within each vendor, subjects are
    shuffled with `seed` and cut by the largest-remainder method, so every split gets its fair
    share of every vendor.
    """
    if not fractions or any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise CmriError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    by_vendor = defaultdict(list)
    for sid, vendor in sorted(subject_vendor.items()):
        by_vendor[vendor].append(sid)
    names = list(fractions)
    out = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    for vendor in sorted(by_vendor):
        ids = by_vendor[vendor]
        order = rng.permutation(len(ids))
        exact = np.array([fractions[n] * len(ids) for n in names])
        counts = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - counts), kind="stable")[: len(ids) - counts.sum()]:
            counts[i] += 1
        start = 0
        for name, count in zip(names, counts):
            out[name].extend(ids[j] for j in order[start:start + count])
            start += count
    for name in names:
        if fractions[name] > 0 and not out[name]:
            raise CmriError(f"the cohort has {len(subject_vendor)} subjects, too few for a non-empty "
                            f"'{name}' split with fractions {fractions}")
        out[name].sort()
    return out
