"""The duplicates check (`fidelity.duplicate_patient_rate`) on honest and collapsed cohorts, seed by seed.

Per seed, 100 train / 100 holdout phantom patients and 100 fresh ones (privacy_group_seeds.cohorts, 32 px); the
"synthetic" cohort is the fresh patients as they are (an honest generator) or collapsed: only the first K of them,
each repeated (renamed) until there are 100 again. One JSON line per seed and cohort.

    python benchmarks/fidelity_duplicates.py FIRST END [--keep 20 50 80 90]

Measured figures: docs/fidelity-utility-checks.md ("fidelity.duplicate_patient_rate").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from auditors.base import AuditContext  # noqa: E402
from auditors.fidelity.duplicates import DuplicatesAuditor  # noqa: E402
from cmri_release.core.sliceset import SliceSet  # noqa: E402
from privacy_group_seeds import cohorts  # noqa: E402


def collapsed(fresh: SliceSet, keep: int) -> SliceSet:
    """The first `keep` patients of `fresh`, then those same patients again under new names, up to its size."""
    subjects = fresh.subjects
    parts, i = [fresh.for_subjects(subjects[:keep])], 0
    while keep + i < len(subjects):
        again = fresh.for_subjects([subjects[i % keep]])
        parts.append(replace(again, subject_ids=np.full(len(again), f"repeat-{i}")))
        i += 1
    return SliceSet.concat(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("first", type=int)
    ap.add_argument("end", type=int)
    ap.add_argument("--keep", type=int, nargs="*", default=[20, 50, 80, 90],
                    help="distinct patients of the collapsed cohorts (none: honest cohorts only)")
    args = ap.parse_args()
    for seed in range(args.first, args.end):
        train, hold, fresh = cohorts(seed, 0, 100)
        for keep in [None, *args.keep]:
            synthetic = fresh if keep is None else collapsed(fresh, keep)
            start = time.time()
            result = DuplicatesAuditor().run(AuditContext(train=train, holdout=hold, synthetic=synthetic, seed=seed,
                                                          quiet=True))
            check, found = result.checks[0], result.metrics["duplicates"]
            print(json.dumps({"seed": seed, "cohort": "fresh" if keep is None else f"collapsed to {keep}",
                              "verdict": str(getattr(check.verdict, "value", check.verdict)),
                              "estimate": check.estimate, "lower": check.lower, "upper": check.upper,
                              "tau": found["tau"], "holdout_median": found["holdout_median_score"],
                              "synthetic_median": found["synthetic_median_score"],
                              "wall_s": round(time.time() - start, 1)},
                             default=lambda v: round(float(v), 4)), flush=True)


if __name__ == "__main__":
    main()
