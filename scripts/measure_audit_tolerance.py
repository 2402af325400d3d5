"""Measure how much each audit figure moves when only the thread count (or a re-run) changes.

`cmri-release verify` re-runs a release's audit and compares each check's estimate and bounds with the recorded
ones within a tolerance. This script measures those tolerances: the same phantom cohorts (real: one seed, split by
patient; "synthetic": fresh phantom patients of another seed, the honest stand-in), the same audit seed, audited in
fresh processes with 1 and 2 torch threads, the 2-thread run twice (determinism at a fixed thread count), and the
2-thread run once more on another CPU's kernels: torch's and oneDNN's AVX2 code paths instead of the AVX-512 ones
this machine picks (`ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`), what a reviewer's older or smaller
machine would run. It prints per check the largest |difference| of estimate, lower and upper bound over the data
seeds, and writes them as JSON.

    python scripts/measure_audit_tolerance.py --train 100 --holdout 100 --test 40 --synthetic 100 \
        --seeds 0 1 --out cmri_release/audit_tolerances.json

Each audit runs in its own process (`--one` is the worker mode), so OpenMP and torch start with the thread count
under test, as a reviewer's fresh `cmri-release verify` would.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _cohorts(args, seed: int):
    from cmri_release.phantom import make_phantom
    from cmri_release.preprocess import PreprocessConfig, cohort_to_slices
    from cmri_release.core.splits import split_subjects

    config = PreprocessConfig(size=args.size)
    n = args.train + args.holdout + args.test
    real = make_phantom(n, seed=2 * seed)
    fractions = {"train": args.train / n, "holdout": args.holdout / n, "test": args.test / n}
    parts = split_subjects({s.id: s.vendor for s in real}, fractions, seed=seed)
    slices = {k: cohort_to_slices(real.subset(v), config) for k, v in parts.items()}
    slices["synthetic"] = cohort_to_slices(make_phantom(args.synthetic, seed=2 * seed + 1), config)
    return slices


def _one(args) -> None:
    """Worker: one audit at the current thread count; its checks as JSON on stdout."""
    import torch

    from cmri_release.audit import run_audit

    torch.set_num_threads(args.threads)
    s = _cohorts(args, args.seed)
    start, cpu = time.perf_counter(), time.process_time()
    report = run_audit(s["train"], s["holdout"], s["synthetic"], test=s["test"], groups=args.groups, seed=args.seed,
                       options={"utility_epochs": args.utility_epochs}, quiet=True)
    out = {"threads": torch.get_num_threads(), "seconds": time.perf_counter() - start,
           "cpu_seconds": time.process_time() - cpu, "timings": report.timings,
           "checks": {c.name: {"estimate": c.estimate, "lower": c.lower, "upper": c.upper,
                               "verdict": c.verdict.value} for c in report.checks}}
    print(json.dumps(out))


# Another CPU's kernels, simulated on this one: the vector width changes how sums are split, as on an AVX2-only CPU.
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _run(args, seed: int, threads: int, extra_env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--one", "--seed", str(seed), "--threads", str(threads),
           "--train", str(args.train), "--holdout", str(args.holdout), "--test", str(args.test),
           "--synthetic", str(args.synthetic), "--size", str(args.size), "--utility-epochs",
           str(args.utility_epochs), "--groups", *args.groups]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **(extra_env or {})}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _diff(a, b) -> float | None:
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return None  # one side could not be measured: no tolerance can cover it
    return abs(a - b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--train", type=int, default=100)
    p.add_argument("--holdout", type=int, default=100)
    p.add_argument("--test", type=int, default=40)
    p.add_argument("--synthetic", type=int, default=100)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--utility-epochs", type=float, default=6.0)
    p.add_argument("--groups", nargs="+", default=["privacy", "fidelity", "utility"])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.one:
        return _one(args)
    runs, worst = [], {}
    for seed in args.seeds:
        one_a, two_a, two_b = _run(args, seed, 1), _run(args, seed, 2), _run(args, seed, 2)
        two_other = _run(args, seed, 2, OTHER_KERNELS)
        runs.append({"seed": seed, "load": os.getloadavg(), "one": one_a, "two": two_a, "two_again": two_b,
                     "two_other_kernels": two_other})
        for name in two_a["checks"]:
            w = worst.setdefault(name, {"threads_1_vs_2": 0.0, "rerun_2_threads": 0.0, "other_kernels": 0.0,
                                        "verdict_changed": False})
            for key, other in (("threads_1_vs_2", one_a), ("rerun_2_threads", two_b), ("other_kernels", two_other)):
                for side in ("estimate", "lower", "upper"):
                    d = _diff(two_a["checks"][name][side], other["checks"].get(name, {}).get(side))
                    w[key] = None if d is None or w[key] is None else max(w[key], d)
                w["verdict_changed"] |= two_a["checks"][name]["verdict"] != other["checks"].get(name, {}).get(
                    "verdict")
        print(f"seed {seed}: 1 thread {one_a['seconds']:.0f} s (cpu {one_a['cpu_seconds']:.0f} s), 2 threads "
              f"{two_a['seconds']:.0f} / {two_b['seconds']:.0f} s, other kernels {two_other['seconds']:.0f} s, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'check':<36} {'|1 vs 2 threads|':>17} {'|re-run, 2 thr|':>16} {'|other kernels|':>16} verdict changed")
    for name, w in worst.items():
        fmt = lambda v: "unmeasurable" if v is None else f"{v:.3g}"  # noqa: E731
        print(f"{name:<36} {fmt(w['threads_1_vs_2']):>17} {fmt(w['rerun_2_threads']):>16} "
              f"{fmt(w['other_kernels']):>16} {w['verdict_changed']}")
    if args.out is not None:  # the table cmri_release/verify.py reads (cmri_release/audit_tolerances.json)
        cohort = (f"phantom {args.train} train / {args.holdout} holdout / {args.test} test real, {args.synthetic} "
                  f"synthetic (another phantom seed), {args.size} px, data seeds {args.seeds}")
        table = {"measured": {"cohort": cohort, "script": "scripts/measure_audit_tolerance.py",
                              "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "load_average": [r["load"] for r in runs]},
                 "checks": {name: {"threads_1_vs_2": w["threads_1_vs_2"], "rerun": w["rerun_2_threads"],
                                   "other_kernels": w["other_kernels"], "verdict_changed": w["verdict_changed"]}
                            for name, w in worst.items()},
                 "runs": runs}
        args.out.write_text(json.dumps(table, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
