"""benchmarks/profile_ops.py: the operator table is sorted by self CPU time, with shares of the profiled total."""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile


def test_top_operators_sorted_with_shares(load_benchmark):
    prof_ops = load_benchmark("profile_ops")
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(4, 8, 32, 32)
    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.no_grad():
        for _ in range(5):
            torch.relu(conv(x))
    rows = prof_ops.top_operators(prof, 3)
    assert len(rows) == 3
    assert [r["self_cpu_ms"] for r in rows] == sorted((r["self_cpu_ms"] for r in rows), reverse=True)
    assert 0 < sum(r["share"] for r in rows) <= 1.0 + 1e-9
    assert any("convolution" in r["operator"] for r in rows)
    assert all(r["calls"] >= 1 for r in rows)
