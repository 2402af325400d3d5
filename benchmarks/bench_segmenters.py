"""The utility audit's independent segmenter trainings, one after another against several at once
(`auditors.segmentation.parallel.map_jobs`: threads with one CPU thread each, or one CUDA stream each on a GPU).
Written as JSON.

    python benchmarks/bench_segmenters.py OUT.json [--device cpu|cuda] [--size 32] [--jobs 4] [--workers 1,2,4]
        [--steps 60] [--batch 8]

Each job trains the audit's segmenter (its default U-Net and augmentation) for `steps` optimiser steps on its own
phantom-like slices; the figure is the median wall time of all jobs, per worker count, the counts alternating, after
a warm-up (oneDNN and cuDNN build kernels on first calls). Workers 1 is the sequential baseline, with the process's
own thread count.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditors.segmentation.parallel import map_jobs  # noqa: E402
from auditors.segmentation.train import TrainConfig, train_segmenter  # noqa: E402
from cmri_release.core.sliceset import SliceSet  # noqa: E402


def rings(n_slices: int, size: int, seed: int) -> SliceSet:
    """Slices with a ring (myocardium) around a disc (LV) and a blob (RV): a learnable segmentation task."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    images = np.empty((n_slices, size, size), np.float32)
    labels = np.zeros((n_slices, size, size), np.uint8)
    for i in range(n_slices):
        cx, cy, r = 0.5 + rng.normal(0, 0.05), 0.5 + rng.normal(0, 0.05), rng.uniform(0.1, 0.18)
        d = np.hypot(x - cx, y - cy)
        labels[i][np.hypot(x - cx + 1.6 * r, y - cy) < 0.9 * r] = 1
        labels[i][d < r + 0.05] = 2
        labels[i][d < r] = 3
        images[i] = np.choose(labels[i], [0.1, 0.7, 0.3, 0.8]) + rng.normal(0, 0.05, (size, size))
    n_subjects = max(1, n_slices // 8)
    return SliceSet(images=images, labels=labels,
                    subject_ids=np.array([f"s{seed}-{i % n_subjects}" for i in range(n_slices)]),
                    vendors=np.full(n_slices, "A"), phases=np.full(n_slices, "ED"), slice_pos=np.zeros(n_slices),
                    slice_index=np.arange(n_slices), has_label=np.ones(n_slices, bool), spacing_mm=1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3, help="timed rounds; worker counts alternate within a round")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    config = TrainConfig(steps=args.steps, batch_size=args.batch)
    data = [rings(64, args.size, seed) for seed in range(args.jobs)]

    def job(d: SliceSet):
        return train_segmenter(d, config, seed=0, device=args.device)

    counts = [int(w) for w in args.workers.split(",")]
    map_jobs(job, data[:max(counts)], workers=max(counts), device=args.device)  # warm-up, every thread
    times: dict[int, list[float]] = {w: [] for w in counts}
    losses = {}
    for _ in range(args.reps):
        for workers in counts:  # interleaved: a load change hits every count alike
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            trained = map_jobs(job, data, workers=workers, device=args.device)
            times[workers].append(time.perf_counter() - start)
            losses[workers] = [round(s.log["final_loss"], 4) for s in trained]
    runs = []
    for workers in counts:
        seconds = float(np.median(times[workers]))
        runs.append({"workers": workers, "seconds": round(seconds, 3), "all_seconds": [round(t, 3) for t in
                     times[workers]], "steps_per_second": round(args.jobs * args.steps / seconds, 2),
                     "final_loss": losses[workers]})
        print(f"workers {workers}: {seconds:.2f} s (median of {args.reps}) for {args.jobs} segmenters x "
              f"{args.steps} steps", flush=True)
    base = runs[0]["seconds"]
    for r in runs:
        r["speedup"] = round(base / r["seconds"], 2)
    result = {"device": args.device, "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda")
              else "cpu", "torch_threads": torch.get_num_threads(), "size": args.size, "jobs": args.jobs,
              "steps": args.steps, "batch": args.batch, "runs": runs}
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
