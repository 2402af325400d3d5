"""A procedural short-axis cine phantom: the cohort every test, demo and audit can run on.

`make_phantom(n, seed)` gives `n` patients of ACDC's five groups (equal mix), scanned by
M&Ms-like vendor styles (equal mix), each with its own anatomy, texture and acquisition.
Patient `i` of a seed is the same whatever `n` is; different seeds give different patients and
different ids.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ..cohort import Cohort, Subject
from .anatomy import GROUPS
from .render import render_subject
from .vendors import DEFAULT_VENDORS, VENDOR_STYLES, resolve_vendor

__all__ = ["GROUPS", "DEFAULT_VENDORS", "VENDOR_STYLES", "iter_phantom", "make_phantom", "phantom_id"]


def phantom_id(id_prefix: str, seed: int, index: int) -> str:
    """Ids carry the seed, so cohorts made with different seeds never share an id."""
    return f"{id_prefix}{seed:04d}-{index:03d}"


def _check(n_subjects, seed, vendors, groups):
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, (int, np.integer)) or n_subjects < 1:
        raise ValueError(f"n_subjects must be a whole number >= 1, got {n_subjects!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    styles = [resolve_vendor(v) for v in (DEFAULT_VENDORS if vendors is None else vendors)]
    if not styles:
        raise ValueError("vendors must name at least one vendor")
    if len({s.name for s in styles}) != len(styles):
        raise ValueError(f"vendors named twice: {list(vendors)}")
    groups = tuple(GROUPS if groups is None else groups)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ValueError(f"unknown groups {unknown}; choose from {GROUPS}")
    return styles, groups


def iter_phantom(n_subjects: int, seed: int, vendors: Sequence[str] | None = None, id_prefix: str = "ph",
                 groups: Sequence[str] | None = None) -> Iterator[Subject]:
    """Yield the phantom's subjects one at a time (groups and vendors cycle, so the mix is balanced)."""
    styles, groups = _check(n_subjects, seed, vendors, groups)
    for index in range(int(n_subjects)):
        group = groups[index % len(groups)]
        style = styles[index % len(styles)]
        yield render_subject(phantom_id(id_prefix, int(seed), index),
                             np.random.SeedSequence([int(seed), index]), group, style)


def make_phantom(n_subjects: int, seed: int, vendors: Sequence[str] | None = None, id_prefix: str = "ph", *,
                 groups: Sequence[str] | None = None, quiet: bool = True) -> Cohort:
    """A phantom cohort of `n_subjects` patients, deterministic for `seed`.

    `vendors` are names ("Siemens", "Philips", "GE", "Canon") or M&Ms letters (A-D); the default
    is Siemens, Philips and GE. `groups` restricts the ACDC groups (default: all five).
    """
    subjects = iter_phantom(n_subjects, seed, vendors, id_prefix, groups)
    subjects = tqdm(subjects, total=int(n_subjects), desc="phantom", unit="subject", disable=quiet)
    return Cohort(list(subjects), source=f"phantom seed {seed}")
