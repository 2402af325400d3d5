"""Training images/s and sampling slices/s of every generator at 64 and 128 px on this machine, with the network
evaluations one sampled slice costs, written as JSON.

    python benchmarks/bench_generators.py OUT.json [--quick] [--network compact] [--device cpu] [--sizes 64,128]

Data: a small phantom cohort preprocessed at each size. Training is timed after one warm-up batch (oneDNN builds
its kernels on the first call); sampling uses each generator's default steps. The machine load is recorded,
since shared CPUs make timings noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def bench_one(name: str, slices, network: str, device: str, train_steps: int, sample_slices: int) -> dict:
    from generators import create_generator

    gen = create_generator(name, network=network)
    batch = int(gen.config["batch_size"])
    labelled = slices.labelled()
    rng = np.random.default_rng(0)
    warm = labelled.select(rng.choice(len(labelled), batch, replace=len(labelled) < batch))
    gen.fit(warm, epochs=1, device=device, quiet=True)  # warm-up: one step
    picked = rng.choice(len(labelled), batch * train_steps, replace=len(labelled) < batch * train_steps)
    data = labelled.select(np.sort(picked))
    start = time.perf_counter()
    log = gen.fit(data, epochs=1, device=device, quiet=True)
    train_s = time.perf_counter() - start
    idx = rng.choice(len(labelled), sample_slices, replace=len(labelled) < sample_slices)
    labels, vendors = labelled.labels[idx], labelled.vendors[idx]
    gen.sample(labels[:2], vendors[:2], seed=0)  # warm-up
    start = time.perf_counter()
    gen.sample(labels, vendors, seed=0)
    sample_s = time.perf_counter() - start
    return {"generator": name, "size": labelled.size, "network": network, "parameters": gen.parameter_count(),
            "batch_size": batch, "train_steps": log["steps"], "train_images_per_s": round(len(data) / train_s, 2),
            "sample_slices": int(sample_slices), "sample_slices_per_s": round(sample_slices / sample_s, 2),
            "network_evaluations_per_slice": gen._evaluations_per_sample()}


def bench_masks(slices, n: int) -> dict:
    from generators.masks import MaskModel

    start = time.perf_counter()
    model = MaskModel().fit(slices.labelled())
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    stacks = model.sample(n, seed=0)
    sample_s = time.perf_counter() - start
    return {"size": slices.size, "fit_seconds": round(fit_s, 3), "patients_per_s": round(n / sample_s, 2),
            "slices_per_s": round(sum(2 * len(s.labels["ED"]) for s in stacks) / sample_s, 2)}


def main(argv=None) -> int:
    from cmri_release.phantom import make_phantom
    from cmri_release.preprocess import PreprocessConfig, cohort_to_slices
    from generators import GENERATORS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true", help="few steps and slices (a smoke run)")
    parser.add_argument("--network", default="compact")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--generators", default=",".join(sorted(GENERATORS)))
    args = parser.parse_args(argv)
    train_steps, sample_slices = (2, 4) if args.quick else (8, 32)
    cohort = make_phantom(4 if args.quick else 6, seed=0)
    report = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__, "platform": platform.platform(), "device": args.device,
                          "load_average_before": _load()},
              "settings": {"quick": args.quick, "train_steps": train_steps, "sample_slices": sample_slices},
              "results": [], "mask_generator": []}
    for size in [int(s) for s in args.sizes.split(",")]:
        slices = cohort_to_slices(cohort, PreprocessConfig(size=size))
        report["mask_generator"].append(bench_masks(slices, 4 if args.quick else 20))
        for name in args.generators.split(","):
            result = bench_one(name, slices, args.network, args.device, train_steps, sample_slices)
            print(json.dumps(result), flush=True)
            report["results"].append(result)
    report["machine"]["load_average_after"] = _load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
