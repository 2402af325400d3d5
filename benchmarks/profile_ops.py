"""Where the time goes inside the demo's two network workloads, by operator (the torch profiler): the audit's
segmenter training and the default generator's sampling, at the demo's size. Prints the top operators by self CPU
time and writes them as JSON.

    python benchmarks/profile_ops.py OUT.json [--size 32] [--steps 30] [--top 12]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_segmenters, a sibling script

from auditors.segmentation.train import TrainConfig, train_segmenter  # noqa: E402
from bench_segmenters import rings  # noqa: E402
from generators.flow import FlowMatching  # noqa: E402


def top_operators(prof, top: int) -> list[dict]:
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"operator": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1),
             "share": round(e.self_cpu_time_total / total, 3)} for e in events[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    data = rings(64, args.size, seed=0)
    config = TrainConfig(steps=args.steps)
    train_segmenter(data, TrainConfig(steps=3), seed=0)  # warm-up: oneDNN builds its kernels on first calls
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_segmenter(data, config, seed=0)
    result = {"size": args.size, "threads": torch.get_num_threads(),
              "segmenter_train": top_operators(prof, args.top)}

    gen = FlowMatching(network="compact")
    gen.fit(data, epochs=1, seed=0, quiet=True)  # weights do not change the cost
    labels, vendors = data.labels[:32], data.vendors[:32]
    gen.sample(labels[:4], vendors[:4], seed=0)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        gen.sample(labels, vendors, seed=0)
    result["flow_sampling"] = top_operators(prof, args.top)
    for name in ("segmenter_train", "flow_sampling"):
        print(f"## {name} ({args.size} px, {result['threads']} threads): top operators by self CPU time")
        for row in result[name]:
            print(f"{row['share']:6.1%} {row['self_cpu_ms']:9.1f} ms {row['calls']:7d} calls  {row['operator']}")
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
