"""The demo's stages that run independent jobs side by side, one CPU core each, against the same jobs one after the
other on every core (how they ran before 2026-12-07): seconds, the ratio, and whether the results are the same.

    python benchmarks/bench_side_by_side.py OUT [--quick] [--seed 0] [--only synthesis,membership_inference,...]

At the demo's sizes (phantom seed 100 + SEED: 100 train / 100 holdout / 50 test patients, 32 px; the default flow
generator trained 2 epochs): synthesis of 100 subjects, `membership_inference` (its two LiRA reference generators),
`nn_memorisation` and `real_copies` (their copy searches, one split per job). "one after the other" is the same code
with one job at a time (cmri_release.core.parallel.effective_workers pinned to 1), so the figures of both columns come
from one process on one machine. OUT ending in .json gets {"stages": [...]} (run_all.py); any other name gets one JSON
line per stage appended. --quick: 24 / 24 / 12 patients, 12 synthetic, 1 epoch.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cmri_release.core.parallel as parallel  # noqa: E402
from auditors.base import AuditContext  # noqa: E402
from auditors.privacy.memorisation import NNMemorisation  # noqa: E402
from auditors.privacy.mia import MembershipInference  # noqa: E402
from auditors.privacy.real_copies import RealCopiesAuditor  # noqa: E402
from cmri_release.audit import _generator_factory  # noqa: E402
from cmri_release.phantom import make_phantom  # noqa: E402
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices  # noqa: E402
from generators.flow import FlowMatching  # noqa: E402
from generators.synthesis import synthesize  # noqa: E402


@contextlib.contextmanager
def one_job_at_a_time():
    """Every map_jobs / map_cpu_jobs call runs its jobs in a row, on every thread torch has (the code before)."""
    original = parallel.effective_workers
    parallel.effective_workers = lambda workers, n_jobs, device: 1
    try:
        yield
    finally:
        parallel.effective_workers = original


def digest(result) -> str:
    """A fingerprint of an auditor's checks and metrics, or of a synthetic cohort's arrays."""
    if hasattr(result, "images"):
        payload = result.images.tobytes() + result.labels.tobytes()
    else:
        payload = json.dumps({"checks": [(c.name, c.verdict.value, c.estimate, c.lower, c.upper)
                                         for c in result.checks], "metrics": result.metrics},
                             sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated stages (default: all)")
    args = ap.parse_args(argv)
    n_train, n_test, n_syn, epochs = (24, 12, 12, 1) if args.quick else (100, 50, 100, 2)
    cfg = PreprocessConfig(size=32)
    real = cohort_to_slices(make_phantom(2 * n_train + n_test, seed=100 + args.seed), cfg)
    train, holdout, test = (real.for_subjects(real.subjects[a:b]) for a, b in
                            ((0, n_train), (n_train, 2 * n_train), (2 * n_train, 2 * n_train + n_test)))
    gen = FlowMatching()
    gen.fit(train, epochs=epochs, seed=args.seed, quiet=True)
    stages = {"synthesis": lambda: synthesize(gen, n_syn, seed=args.seed)}
    synthetic = synthesize(gen, n_syn, seed=args.seed)

    def ctx():
        return AuditContext(train=train, holdout=holdout, test=test, synthetic=synthetic, generator=gen,
                            generator_factory=_generator_factory, model_card=gen.model_card, seed=0, quiet=True)

    stages["membership_inference"] = lambda: MembershipInference().run(ctx())
    stages["nn_memorisation"] = lambda: NNMemorisation().run(ctx())
    stages["real_copies"] = lambda: RealCopiesAuditor().run(ctx())
    rows = []
    for name, stage in stages.items():
        if args.only and name not in args.only.split(","):
            continue
        with one_job_at_a_time():
            before_s, before = timed(stage)
        after_s, after = timed(stage)
        line = {"stage": name, "seed": args.seed, "quick": args.quick, "threads": torch.get_num_threads(),
                "one_after_the_other_s": round(before_s, 1), "side_by_side_s": round(after_s, 1),
                "speed_up": round(before_s / after_s, 2), "same_result": digest(before) == digest(after),
                "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if not line["same_result"] and hasattr(before, "checks"):
            line["values"] = {c.name: [b.estimate, c.estimate] for b, c in zip(before.checks, after.checks)}
        if hasattr(before, "images"):
            line["max_abs_image_difference"] = float(np.abs(before.images - after.images).max())
        print(json.dumps(line), flush=True)
        rows.append(line)
        if not args.out.endswith(".json"):
            with open(args.out, "a") as fh:
                fh.write(json.dumps(line) + "\n")
    if args.out.endswith(".json"):
        Path(args.out).write_text(json.dumps({"stages": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
