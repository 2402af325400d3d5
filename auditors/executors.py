"""Where the audit's independent jobs run: one interface, two engines.

    with open_executor("ray", address=None) as executor:   # "local": today's threads / CUDA streams
        results = executor.map(fn, jobs, device=ctx.device)  # [fn(job) for job in jobs], in order

`local` runs the jobs in this process (`auditors.segmentation.parallel.map_jobs`: a thread per job with one CPU
thread each, or a CUDA stream each). `ray` sends each job to a Ray task: without an address it starts a local Ray
instance (as many CPUs as torch uses here) and stops it when the audit ends; with one (`ray://host:10001`, or
`auto` on a cluster node) it joins that cluster, leaves it running, and asks for one GPU per job when the audit runs
on CUDA. A job is a plain function of picklable data, and seeds travel with the job, so the same seeds give the
same results under either engine. Ray is imported only when chosen (`pip install 'cmri-release[distributed]'`).
"""
from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from typing import Callable, Iterator, Sequence, TypeVar

from cmri_release.core.errors import CmriError

T = TypeVar("T")
R = TypeVar("R")


class Executor(ABC):
    name: str

    @abstractmethod
    def map(self, fn: Callable[[T], R], jobs: Sequence[T], *, workers: int | None = None, device: str = "cpu",
            quiet: bool = True, desc: str = "jobs") -> list[R]:
        """[fn(job) for job in jobs], results in the order of `jobs`; the first job's exception is raised here."""

    def close(self) -> None:
        """Release what the executor started."""

    def describe(self) -> dict:
        return {"executor": self.name}


class LocalExecutor(Executor):
    name = "local"

    def map(self, fn, jobs, *, workers=None, device="cpu", quiet=True, desc="jobs"):
        from .segmentation.parallel import map_jobs

        return map_jobs(fn, jobs, workers=workers, device=device, quiet=quiet, desc=desc)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise CmriError("--executor ray needs Ray, which is not installed: pip install "
                            "'cmri-release[distributed]' (or choose --executor local)") from None
        import torch

        self.ray = ray
        self.address = address
        self.started = not ray.is_initialized()
        if self.started:
            kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address is None:
                # A private instance on this machine: the driver's environment (PYTHONPATH, threads) for workers.
                cpus = num_cpus or max(1, torch.get_num_threads())
                kwargs.update(num_cpus=cpus, num_gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0,
                              runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                                        if k in ("PYTHONPATH", "OMP_WAIT_POLICY")}})
            else:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise CmriError(f"--ray-address {address}: cannot join the Ray cluster: {first[:200]}"
                                if address else f"cannot start a local Ray instance: {first[:200]}") from None

    def map(self, fn, jobs, *, workers=None, device="cpu", quiet=True, desc="jobs"):
        from tqdm.auto import tqdm

        ray = self.ray
        on_gpu = not str(device).startswith("cpu")
        # One CPU per job (torch runs one thread in it: Ray sets OMP_NUM_THREADS to the CPUs asked for); a GPU
        # per job on CUDA, which Ray makes that worker's only visible device ("cuda" inside the job).
        task = ray.remote(num_cpus=1, num_gpus=1 if on_gpu else 0, max_retries=0)(_call)
        fn_ref = ray.put(fn)
        refs = [task.remote(fn_ref, job, "cuda" if on_gpu else None) for job in jobs]
        with tqdm(total=len(refs), desc=f"{desc} (ray)", disable=quiet, leave=False) as bar:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)  # the first failure is raised now (fail closed); the rest are cancelled below
                bar.update(len(done))
        return ray.get(refs)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False

    def describe(self) -> dict:
        return {"executor": self.name, "ray_address": self.address or "local"}


def _call(fn, job, device):
    """A Ray task: fn(job), with the device renamed to the one GPU Ray gave this worker."""
    import torch

    torch.set_num_threads(1)
    if device is not None and hasattr(fn, "keywords") and "device" in fn.keywords:
        import functools
        fn = functools.partial(fn.func, *fn.args, **{**fn.keywords, "device": device})
    return fn(job)


EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}


def create_executor(name: str, address: str | None = None) -> Executor:
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise ValueError("a Ray address applies only to --executor ray")
    return EXECUTORS[name](address=address) if name == "ray" else EXECUTORS[name]()


@contextlib.contextmanager
def open_executor(name: str = "local", address: str | None = None) -> Iterator[Executor]:
    executor = create_executor(name, address)
    try:
        yield executor
    finally:
        executor.close()
