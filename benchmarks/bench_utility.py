"""The utility audit on the phantom at a chosen size, over several seeds: every paired figure with its interval,
the paired SDs, the verdicts and the cost. Written as JSON. The measurements behind the utility defaults
(docs/fidelity-utility-checks.md).

    python benchmarks/bench_utility.py OUT.json [--train 100] [--test 40] [--synthetic 100] [--size 32]
        [--seeds 0,1,2] [--synthetic-dir DIR] [--cache FILE.pkl] [--option name=value ...]

The "synthetic" cohort is, by default, fresh phantom patients of another seed: a perfect generator, whose
figures an honest generator should reach. `--synthetic-dir` audits a cohort written by `cmri-release
synthesize` instead (a trained generator). Each seed reruns the audit with another segmenter seed and another
low-data draw on the same cohorts, and (for the stand-in) another synthetic cohort.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditors.base import AuditContext, validate_options  # noqa: E402
from auditors.utility.segmentation_utility import SegmentationUtilityAuditor  # noqa: E402
from cmri_release.phantom import make_phantom  # noqa: E402
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices  # noqa: E402

SYNTHETIC_SEED0 = 100  # phantom seeds of the stand-in synthetic cohorts: disjoint from train (0) and test (1)


def cohorts(train: int, test: int, synthetic: int, size: int, seeds, synthetic_dir: Path | None,
            cache: Path | None) -> dict:
    config = PreprocessConfig(size=size)
    if cache is not None and cache.exists():  # the real cohorts (and the stand-in) of an earlier run
        out = pickle.loads(cache.read_bytes())
        if synthetic_dir is not None:
            from cmri_release.io import read_cohort
            out["synthetic"] = {s: cohort_to_slices(read_cohort(synthetic_dir), config) for s in seeds}
        return out

    def phantom(n, seed):
        return cohort_to_slices(make_phantom(n, seed, quiet=True), config)

    out = {"train": phantom(train, 0), "test": phantom(test, 1), "holdout": phantom(max(4, test // 4), 2)}
    if synthetic_dir is not None:
        from cmri_release.io import read_cohort
        out["synthetic"] = {s: cohort_to_slices(read_cohort(synthetic_dir), config) for s in seeds}
    else:
        out["synthetic"] = {s: phantom(synthetic, SYNTHETIC_SEED0 + s) for s in seeds}
    if cache is not None:
        cache.write_bytes(pickle.dumps(out))
    return out


def one_audit(data: dict, seed: int, options: dict) -> dict:
    ctx = AuditContext(train=data["train"], holdout=data["holdout"], synthetic=data["synthetic"][seed],
                       test=data["test"], seed=seed, options=validate_options(options), quiet=True)
    load, wall, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
    result = SegmentationUtilityAuditor().run(ctx)
    return {"seed": seed, "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
            "checks": [{k: c.to_dict()[k] for k in ("name", "verdict", "estimate", "lower", "upper", "threshold")}
                       for c in result.checks],
            "paired": [r for r in result.metrics["paired"]],
            "runs": {k: v["dice"]["mean"] for k, v in result.metrics["runs"].items()},
            "budget": result.metrics["budget"]}


def summarise(audits: list[dict]) -> dict:
    """Per check: the mean and SD over seeds of the estimate, the verdict counts, and the mean paired SD."""
    out = {}
    for name in [c["name"] for c in audits[0]["checks"]]:
        rows = [next(c for c in a["checks"] if c["name"] == name) for a in audits]
        est = np.array([r["estimate"] for r in rows], float)
        sds = [p["paired_sd"] for a in audits for p in a["paired"] if p["check"] == name and p["scope"] == "all"]
        out[name] = {"mean": float(est.mean()), "sd_over_seeds": float(est.std(ddof=1)) if len(est) > 1 else None,
                     "lower_min": float(min(r["lower"] for r in rows)),
                     "verdicts": {v: sum(r["verdict"] == v for r in rows) for v in ("pass", "inconclusive", "fail")},
                     "paired_sd_mean": float(np.mean(sds))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=int, default=100)
    p.add_argument("--test", type=int, default=40)
    p.add_argument("--synthetic", type=int, default=100)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--synthetic-dir", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--option", action="append", default=[], help="an audit option, name=value (JSON value)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    options = {k: json.loads(v) if v[:1] in "0123456789-[{tf\"" else v
               for k, v in (o.split("=", 1) for o in args.option)}
    data = cohorts(args.train, args.test, args.synthetic, args.size, seeds, args.synthetic_dir, args.cache)
    audits = []
    for seed in seeds:
        audits.append(one_audit(data, seed, options))
        print(json.dumps({k: audits[-1][k] for k in ("seed", "wall_s", "cpu_s", "load_before", "checks")}),
              flush=True)
        args.out.write_text(json.dumps({"setup": vars(args) | {"out": str(args.out), "cache": str(args.cache),
                                                               "synthetic_dir": str(args.synthetic_dir)},
                                        "audits": audits, "summary": summarise(audits)}, indent=1))


if __name__ == "__main__":
    main()
