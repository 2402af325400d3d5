"""A procedural short-axis cine phantom: the cohort every test, demo and audit can run on.

`make_phantom(n, seed)` gives `n` patients of ACDC's five groups (equal mix), scanned by
M&Ms-like vendor styles (equal mix), each with its own anatomy, texture and acquisition.
Patient `i` of a seed is the same whatever `n` is; different seeds give different patients and
different ids.
"""
from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context

import numpy as np
from tqdm import tqdm

from ..core.cohort import Cohort, Subject
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


@functools.lru_cache(maxsize=1)
def _blas_controller():
    try:  # scikit-learn's dependency; without it BLAS keeps its threads (slower, same numbers)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _one_blas_thread():
    """A context in which BLAS runs on one thread. The renderer's matrix products are small (spline
    read-outs of the texture fields): a second BLAS thread only waits on a shared core, which made
    them several times slower, and environment variables set after numpy is loaded do not reach
    BLAS, so the limit is set through threadpoolctl (restored on exit)."""
    controller = _blas_controller()
    return nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


def _render(args) -> Subject:
    index, seed, id_prefix, group, style = args
    with _one_blas_thread():
        return render_subject(phantom_id(id_prefix, seed, index), np.random.SeedSequence([seed, index]), group,
                              style)


def _jobs(n_subjects, seed, vendors, id_prefix, groups) -> list[tuple]:
    styles, groups = _check(n_subjects, seed, vendors, groups)
    return [(index, int(seed), id_prefix, groups[index % len(groups)], styles[index % len(styles)])
            for index in range(int(n_subjects))]


def iter_phantom(n_subjects: int, seed: int, vendors: Sequence[str] | None = None, id_prefix: str = "ph",
                 groups: Sequence[str] | None = None, workers: int = 1) -> Iterator[Subject]:
    """Yield the phantom's subjects in order (groups and vendors cycle, so the mix is balanced).

    Each patient has its own seed, so `workers` processes render the same patients as one does.
    """
    jobs = _jobs(n_subjects, seed, vendors, id_prefix, groups)
    workers = max(1, min(int(workers), len(jobs) // 4))  # a pool costs ~1 s to start: only for enough patients
    if workers == 1:
        yield from map(_render, jobs)
        return
    # fork where there is one: spawn would re-run a caller's script that lacks a `__main__` guard. Rendering
    # is numpy and scipy only (never OpenMP, which a forked child could deadlock on), one thread per child
    # (the variables below reach libraries loaded later; BLAS, already loaded, is limited in `_render`).
    context = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        yield from pool.map(_render, jobs, chunksize=max(1, len(jobs) // (8 * workers)))


def _one_thread() -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"


def default_workers() -> int:
    """Processes for a large phantom: every core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def make_phantom(n_subjects: int, seed: int, vendors: Sequence[str] | None = None, id_prefix: str = "ph", *,
                 groups: Sequence[str] | None = None, quiet: bool = True, workers: int = 1) -> Cohort:
    """A phantom cohort of `n_subjects` patients, deterministic for `seed`.

    `vendors` are names ("Siemens", "Philips", "GE", "Canon") or M&Ms letters (A-D); the default
    is Siemens, Philips and GE. `groups` restricts the ACDC groups (default: all five). `workers`
    processes render patients side by side (the same cohort whatever their number).
    """
    subjects = iter_phantom(n_subjects, seed, vendors, id_prefix, groups, workers)
    subjects = tqdm(subjects, total=int(n_subjects), desc="phantom", unit="subject", disable=quiet)
    return Cohort(list(subjects), source=f"phantom seed {seed}")
