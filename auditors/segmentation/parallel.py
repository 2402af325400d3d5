"""Run independent segmenter trainings side by side, one CPU core each.

At the audit's sizes (32-64 px, batch 8) one training step is many small operators: a second intra-op thread speeds
a single training up by under 10% (`benchmarks/bench_threads.py`), while two trainings side by side on one thread
each finish in about half the time of the two in a row. Python threads suffice, since torch releases the GIL inside
its operators; processes would pay seconds of start-up and pickling for nothing. On a GPU the jobs run in order.
"""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch
from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """As many jobs at once as torch may use threads (so OMP_NUM_THREADS=1 keeps the audit on one core)."""
    return max(1, torch.get_num_threads())


@contextlib.contextmanager
def _one_thread_each():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def effective_workers(workers: int | None, n_jobs: int, device: str) -> int:
    """How many jobs `map_jobs` runs at once."""
    workers = default_workers() if workers is None else int(workers)
    if not str(device).startswith("cpu"):
        return 1
    return max(1, min(workers, n_jobs))


def map_jobs(fn: Callable[[T], R], jobs: Sequence[T], *, workers: int | None = None, device: str = "cpu",
             quiet: bool = True, desc: str = "segmenters") -> list[R]:
    """[fn(job) for job in jobs], `workers` at a time on the CPU, results in the order of `jobs`.

    The first exception raised by a job is raised here (after the running jobs finish): the caller fails closed.
    """
    workers = effective_workers(workers, len(jobs), device)
    if workers == 1:
        return [fn(job) for job in tqdm(jobs, desc=desc, disable=quiet, leave=False)]

    def run(job: T) -> R:
        torch.set_num_threads(1)  # OpenMP's thread count is per OS thread: set it in this one too
        return fn(job)

    with _one_thread_each(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segmenter") as pool:
        futures = [pool.submit(run, job) for job in jobs]
        with tqdm(total=len(jobs), desc=f"{desc} ({workers} at a time)", disable=quiet, leave=False) as bar:
            for future in futures:
                future.result()
                bar.update()
        return [f.result() for f in futures]
