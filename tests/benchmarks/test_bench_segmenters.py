"""benchmarks/bench_segmenters.py: every worker count trains the same segmenters (the same losses), the first count
is the baseline of the speed-ups, and a GPU run without a GPU is refused."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_segmenters")


def test_rings_are_a_labelled_four_class_task(bench):
    s = bench.rings(16, 24, seed=0)
    assert s.images.shape == s.labels.shape == (16, 24, 24) and set(np.unique(s.labels)) == {0, 1, 2, 3}
    assert len(s.subjects) == 2 and s.has_label.all()
    # Each structure has its own mean intensity: the segmenter has something to learn.
    means = [s.images[s.labels == k].mean() for k in range(4)]
    assert np.all(np.diff(sorted(means)) > 0.05)


def test_every_worker_count_trains_the_same_segmenters(bench, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["bench_segmenters.py", str(out), "--size", "16", "--jobs", "2", "--steps", "2",
                                      "--workers", "1,2", "--reps", "1", "--batch", "4"])
    before = torch.get_num_threads()
    bench.main()
    assert torch.get_num_threads() == before
    r = json.loads(out.read_text())
    assert [row["workers"] for row in r["runs"]] == [1, 2] and r["runs"][0]["speedup"] == 1.0
    assert all(row["seconds"] > 0 and len(row["all_seconds"]) == 1 for row in r["runs"])
    np.testing.assert_allclose(r["runs"][0]["final_loss"], r["runs"][1]["final_loss"], atol=2e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the refusal where there is no GPU")
def test_cuda_without_a_gpu_is_refused(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_segmenters.py", str(tmp_path / "r.json"), "--device", "cuda"])
    with pytest.raises(SystemExit) as exc:
        bench.main()
    assert exc.value.code == 2
