"""benchmarks/bench_side_by_side.py: its "one after the other" column really runs one job at a time (in the calling
thread) and is undone after; the fingerprint tells results apart. Timings are the benchmark's to report."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from cmri_release.core import parallel


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_side_by_side")


def test_one_after_the_other_runs_every_job_in_the_calling_thread_and_is_undone(bench):
    def thread_of(_):
        return threading.get_ident()

    with bench.one_job_at_a_time():
        assert set(parallel.map_jobs(thread_of, range(4), workers=2)) == {threading.get_ident()}
        assert set(parallel.map_cpu_jobs(thread_of, range(4), workers=2)) == {threading.get_ident()}
    assert threading.get_ident() not in set(parallel.map_jobs(thread_of, range(4), workers=2))


def test_the_fingerprint_tells_cohorts_and_results_apart(bench):
    class Cohort:
        def __init__(self, value):
            self.images = np.full((2, 4, 4), value, np.float32)
            self.labels = np.zeros((2, 4, 4), np.uint8)

    assert bench.digest(Cohort(0.5)) == bench.digest(Cohort(0.5))
    assert bench.digest(Cohort(0.5)) != bench.digest(Cohort(0.5 + 1e-7))
