"""Thread settings for the demo's three network workloads: seconds at 1 and 2 torch threads, with OpenMP's default
(spinning) wait policy and with OMP_WAIT_POLICY=PASSIVE, each in a fresh process (the OpenMP runtime reads its
environment once). Written as JSON.

    python benchmarks/bench_threads.py OUT.json [--quick] [--size 32]

Workloads, at the demo's size (32 px) and batch sizes:
  segmenter_train   audit segmenter (auditors.segmentation): optimiser steps, batch 8, augmentation included
  generator_train   default generator (flow, compact U-Net): optimiser steps, batch 16
  sampling          default generator: `sample` of 64 slices (Heun 8 steps, 15 network evaluations per slice)
The figure is the median of the timed repetitions after a warm-up (oneDNN builds kernels on first calls).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, statistics, sys, time
import numpy as np, torch
size, reps, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
labels = rng.integers(0, 4, (64, size, size)).astype(np.uint8)
images = rng.random((64, size, size)).astype(np.float32)

def timed(fn):
    fn()  # warm-up
    out = []
    for _ in range(reps):
        start = time.perf_counter(); fn(); out.append(time.perf_counter() - start)
    return statistics.median(out)

from auditors.segmentation.train import TrainConfig, train_segmenter
from cmri_release.core.sliceset import SliceSet
n = len(images)
slices = SliceSet(images=images, labels=labels, subject_ids=np.repeat([f"s{i}" for i in range(8)], n // 8),
                  vendors=np.full(n, "A"), phases=np.full(n, "ED"), slice_pos=np.zeros(n),
                  slice_index=np.tile(np.arange(n // 8), 8), has_label=np.ones(n, bool), spacing_mm=2.0)
result = {"threads": torch.get_num_threads()}
result["segmenter_train_s"] = timed(lambda: train_segmenter(slices, TrainConfig(steps=steps), seed=0))

from generators.flow import FlowMatching
from generators.training import Batch
torch.manual_seed(0)
gen = FlowMatching(network="compact"); gen.vendors = ["A", "B", "C"]; gen._build(3)
gen._built, gen.image_size = True, size
opt = torch.optim.Adam(gen.net.parameters(), lr=1e-3)
batch = Batch(x=torch.rand(16, 1, size, size) * 2 - 1,
              cond=torch.nn.functional.one_hot(torch.as_tensor(labels[:16]).long(), 4).permute(0, 3, 1, 2).float(),
              vendor=torch.zeros(16, dtype=torch.long))
g = torch.Generator().manual_seed(0)

def train_steps():
    for _ in range(steps):
        opt.zero_grad(set_to_none=True); gen._loss(batch, g).backward(); opt.step()

gen.net.train()
result["generator_train_s"] = timed(train_steps)
gen.net.eval()
result["sampling_s"] = timed(lambda: gen.sample(labels, "A", seed=0))
result["steps"], result["sample_slices"] = steps, len(labels)
print(json.dumps(result))
"""


def run(threads: int, policy: str | None, size: int, reps: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run([sys.executable, "-c", CHILD, str(size), str(reps), str(steps)], capture_output=True,
                          text=True, cwd=ROOT, env=env, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out.update(omp_num_threads=threads, omp_wait_policy=policy or "default")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args(argv)
    reps, steps = (1, 5) if args.quick else (3, 40)
    load_before = list(os.getloadavg())
    rows = []
    for policy in (None, "PASSIVE"):
        for threads in (1, 2):
            rows.append(run(threads, policy, args.size, reps, steps))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    base = rows[0]
    for r in rows:
        r["speedup_vs_1_thread_default"] = {k: round(base[k] / r[k], 3) for k in
                                            ("segmenter_train_s", "generator_train_s", "sampling_s")}
    result = {"size": args.size, "cpus": os.cpu_count(), "load_before": load_before,
              "load_after": list(os.getloadavg()), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
