"""benchmarks/bench_threads.py: every (threads, wait policy) cell runs in its own process with that environment,
and its speed-ups are relative to the 1-thread default row. Timings are the benchmark's to report, not asserted."""
from __future__ import annotations

import json

import pytest



@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_threads")


def test_each_cell_gets_its_own_environment(bench, tmp_path, monkeypatch):
    seen = []

    def fake_run(threads, policy, size, reps, steps):
        seen.append((threads, policy, size, reps, steps))
        base = {"segmenter_train_s": 1.0, "generator_train_s": 2.0, "sampling_s": 4.0}
        return {k: v / threads for k, v in base.items()} | {"omp_num_threads": threads,
                                                           "omp_wait_policy": policy or "default"}

    monkeypatch.setattr(bench, "run", fake_run)
    out = tmp_path / "t.json"
    assert bench.main([str(out), "--quick", "--size", "16"]) == 0
    assert [(t, p) for t, p, *_ in seen] == [(1, None), (2, None), (1, "PASSIVE"), (2, "PASSIVE")]
    assert all(s[2:] == (16, 1, 5) for s in seen)
    rows = json.loads(out.read_text())["rows"]
    assert rows[1]["speedup_vs_1_thread_default"] == {"segmenter_train_s": 2.0, "generator_train_s": 2.0,
                                                      "sampling_s": 2.0}


@pytest.mark.slow
def test_one_real_cell_reports_positive_seconds_at_its_thread_count(bench):
    row = bench.run(1, "PASSIVE", size=16, reps=1, steps=2)
    assert row["threads"] == 1 and row["omp_wait_policy"] == "PASSIVE"
    assert all(row[k] > 0 for k in ("segmenter_train_s", "generator_train_s", "sampling_s"))
