"""The FD excess and ratio of both learned spaces on honest phantom draws and on the degradations, seed after seed.

The cohorts and audit seeds of `privacy_group_seeds.py` (100 train / 100 holdout of one phantom seed, 100 fresh
patients of another as the honest "synthetic" cohort, 32 px); only the `feature_distance` auditor runs. On the first
seed the fresh cohort is also degraded (noise, blur, blotches, shuffled inside structures) and mode-collapsed
(10 patients repeated 10 times, 50 twice), and on the first two seeds 20 patients repeated 5 times. Measured for the switch of the gated statistic from the FD ratio to the FD excess
(docs/fidelity-utility-checks.md).

    python benchmarks/fd_excess_seeds.py FIRST_SEED END_SEED [--networks K] [--honest-only]   (one JSON line per cohort)

`--networks K`: the audit option `fidelity_networks` (K independently seeded networks per learned space);
`--honest-only`: the honest draws alone, without the degradations and collapses.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from privacy_group_seeds import cohorts  # noqa: E402

from auditors.base import AuditContext  # noqa: E402
from auditors.fidelity.degradations import KINDS, degrade  # noqa: E402
from auditors.fidelity.feature_distance import FeatureDistanceAuditor  # noqa: E402
from cmri_release.core.sliceset import SliceSet  # noqa: E402


def collapse(fresh, k=10):
    """Mode collapse: the first k patients of `fresh`, each repeated 100 / k times under new ids."""
    parts = []
    base = fresh.for_subjects(fresh.subjects[:k])
    for r in range(100 // k):
        parts.append(SliceSet(images=base.images, labels=base.labels, subject_ids=np.char.add(f"r{r}-", base.subject_ids.astype(str)),
                              vendors=base.vendors, phases=base.phases, slice_pos=base.slice_pos, slice_index=base.slice_index,
                              has_label=base.has_label, spacing_mm=base.spacing_mm))
    return SliceSet.concat(parts)


def run(train, hold, syn, seed, case, networks: int = 1):
    """One JSON line: per learned space, the FD ratio and excess with their bounds."""
    ctx = AuditContext(train=train, holdout=hold, synthetic=syn, seed=seed, quiet=True,
                       options={"fidelity_networks": networks})
    res = FeatureDistanceAuditor().run(ctx)
    row = {"case": case, "seed": seed, "networks": networks}
    for space, m in res.metrics["spaces"].items():
        fd = m["fd"]
        row[space] = {"ratio": fd["ratio"], "ratio_bounds": fd["ratio_bounds"], "excess": fd["excess"], "excess_bounds": fd["excess_bounds"]}
    print(json.dumps(row, default=lambda v: round(float(v), 5)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("first", type=int)
    ap.add_argument("end", type=int)
    ap.add_argument("--networks", type=int, default=1)
    ap.add_argument("--honest-only", action="store_true")
    args = ap.parse_args()
    k = args.networks
    for seed in range(args.first, args.end):
        train, hold, fresh = cohorts(seed, 0)
        run(train, hold, fresh, seed, "honest", k)
        if args.honest_only:
            continue
        if seed == args.first:
            for kind in KINDS:
                run(train, hold, degrade(fresh, kind), seed, kind, k)
            for n in (10, 50):
                run(train, hold, collapse(fresh, n), seed, f"collapse{n}x{100 // n}", k)
        if seed - args.first < 2:  # the milder collapse on two draws: the threshold must block it as the ratio did
            run(train, hold, collapse(fresh, 20), seed, "collapse20x5", k)


if __name__ == "__main__":
    main()
