"""Run independent jobs side by side, one CPU core each: segmenter trainings, reference generators, synthetic
subjects, copy searches.

At this project's sizes (32-64 px, batch 8-20) one network step is many small operators: a second intra-op thread
speeds a single training up by under 10% (`benchmarks/bench_threads.py`), while two trainings side by side on one
thread each finish in about half the time of the two in a row. Python threads suffice, since torch releases the
GIL inside its operators; processes would pay seconds of start-up and pickling for nothing. On a GPU each job runs on its own
CUDA stream when more than one runs at once, so that one job's kernels fill the gaps between another's launches.
"""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch
from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


# Jobs at once on a GPU unless asked. Measured on an H200 (benchmarks/cuda/segmenters_cuda_*.json): 10 segmenters at
# 128 px took 15.8 s in a row, 7.6 s two at a time, 9.4 s four at a time (the launches share one GIL).
CUDA_WORKERS = 2

# torch has one global random generator; jobs side by side that seed it (weight initialisation) take turns.
_GLOBAL_RNG_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded_global_rng(seed: int):
    """torch's global generator seeded with `seed` for the block, for this job alone, and restored after: weights
    initialised inside come out the same whatever other jobs run beside it."""
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def global_rng_turn():
    """The global generator for this job alone (e.g. to seed it for what follows, when that does not run beside
    other jobs), without restoring it."""
    with _GLOBAL_RNG_LOCK:
        yield


def _on_gpu(device: str) -> bool:
    return not str(device).startswith("cpu")


def default_workers(device: str = "cpu") -> int:
    """On the CPU as many jobs at once as torch may use threads (so OMP_NUM_THREADS=1 keeps the audit on one
    core)."""
    if _on_gpu(device):
        return CUDA_WORKERS
    return max(1, torch.get_num_threads())


@contextlib.contextmanager
def one_thread():
    """torch on one intra-op thread (in the calling OS thread) for the block, then as before."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def effective_workers(workers: int | None, n_jobs: int, device: str) -> int:
    """How many jobs `map_jobs` runs at once."""
    workers = default_workers(device) if workers is None else int(workers)
    return max(1, min(workers, n_jobs))


def map_jobs(fn: Callable[[T], R], jobs: Sequence[T], *, workers: int | None = None, device: str = "cpu",
             quiet: bool = True, desc: str = "jobs") -> list[R]:
    """[fn(job) for job in jobs], `workers` at a time, results in the order of `jobs`.

    The first exception raised by a job is raised here (after the running jobs finish): the caller fails closed.
    """
    workers = effective_workers(workers, len(jobs), device)
    if workers == 1:
        return [fn(job) for job in tqdm(jobs, desc=desc, disable=quiet, leave=False)]

    on_gpu = _on_gpu(device)

    def run(job: T) -> R:
        if on_gpu:
            stream = torch.cuda.Stream(device=device)
            with torch.cuda.stream(stream):
                result = fn(job)
            stream.synchronize()
            return result
        torch.set_num_threads(1)  # OpenMP's thread count is per OS thread: set it in this one too
        return fn(job)

    threads = contextlib.nullcontext() if on_gpu else one_thread()
    with threads, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job") as pool:
        futures = [pool.submit(run, job) for job in jobs]
        with tqdm(total=len(jobs), desc=f"{desc} ({workers} at a time)", disable=quiet, leave=False) as bar:
            for future in futures:
                future.result()
                bar.update()
        return [f.result() for f in futures]


def map_cpu_jobs(fn: Callable[[T], R], jobs: Sequence[T], *, workers: int | None = None, quiet: bool = True,
                 desc: str = "jobs") -> list[R]:
    """`map_jobs` on the CPU for jobs that also call FAISS and numpy's BLAS (the copy searches): side by side, every
    pool a job uses runs one thread (torch's and FAISS's OpenMP per job thread, the BLAS libraries while the jobs
    run), so two jobs fill two cores instead of four threads crowding them. FAISS's exact search and BLAS's
    products give the same numbers on any thread count. One job at a time (one core, or one job) runs as before."""
    workers = effective_workers(workers, len(jobs), "cpu")
    if workers == 1:
        return [fn(job) for job in tqdm(jobs, desc=desc, disable=quiet, leave=False)]
    from threadpoolctl import threadpool_limits

    try:
        import faiss
    except ImportError:  # pragma: no cover - a required dependency
        faiss = None

    def one_core(job: T) -> R:
        if faiss is not None:
            faiss.omp_set_num_threads(1)  # this thread's OpenMP setting (FAISS has its own runtime)
        return fn(job)

    with threadpool_limits(limits=1, user_api="blas"):
        return map_jobs(one_core, jobs, workers=workers, device="cpu", quiet=quiet, desc=desc)
