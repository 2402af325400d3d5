"""benchmarks/bench_nn_scale.py: queries stream reproducibly chunk by chunk, near copies are found, an IVF that
probes every list is exact (recall 1), and the step is wired into run_all."""
from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_nn_scale")


def test_query_chunks_are_reproducible_and_bounded(bench, monkeypatch):
    monkeypatch.setattr(bench, "CHUNK", 300)
    train = bench.index_vectors(500, 8, 10, seed=0, spread=0.05)
    a = list(bench.query_chunks(700, train, 10, seed=1, spread=0.05))
    b = list(bench.query_chunks(700, train, 10, seed=1, spread=0.05))
    assert [s for s, _ in a] == [0, 300, 600] and [len(q) for _, q in a] == [300, 300, 100]
    for (_, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(np.linalg.norm(a[0][1], axis=1), 1.0, rtol=1e-5)


def test_an_ivf_probing_every_list_matches_exact_search(bench, tmp_path):
    out = tmp_path / "r.json"
    args = bench.parse_args([str(out), "--index", "4000", "--queries", "3000", "--dim", "16", "--clusters", "20",
                             "--nlist", "8", "--nprobe", "8", "--exact-queries", "3000"])
    args.one = 3000
    row = bench.run_one(args)
    assert row["recall_at_1"] == 1.0 and row["exact_extrapolated"] is False
    assert row["near_copies_in_sample"] > 0 and row["recall_at_1_near_copies"] == 1.0
    assert row["peak_rss_mb"] > 0 and json.dumps(row)


def test_run_all_has_the_step(load_benchmark, tmp_path):
    run_all = load_benchmark("run_all")
    commands, out = run_all.step_commands("nn_scale", True, tmp_path)
    assert commands[0][1].endswith("bench_nn_scale.py") and out == tmp_path / "nn_scale.json"
