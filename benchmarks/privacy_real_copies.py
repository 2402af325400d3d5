"""`privacy.real_patient_copies` alone at the demo's sizes: its verdict, whom it confirms, and its time.

Phantom seed 100 + SEED: 100 train / 100 holdout / 50 test patients; 100 fresh patients (seed 500 + SEED) as the
synthetic cohort (`fresh`), or 90 of them and 5 holdout + 5 test patients under new names (`copies`). 32 px, default
options; no generator. One JSON line per case.

    python benchmarks/privacy_real_copies.py [fresh] [copies] [--seed 0]

Measured figures: docs/privacy-checks.md ("One reference").
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

from auditors.base import AuditContext  # noqa: E402
from auditors.privacy.real_copies import RealCopiesAuditor  # noqa: E402
from cmri_release.core.sliceset import SliceSet  # noqa: E402
from cmri_release.phantom import make_phantom  # noqa: E402
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices  # noqa: E402

CASES = ("fresh", "copies")


def _renamed(slices: SliceSet, prefix: str) -> SliceSet:
    return replace(slices, subject_ids=np.char.add(prefix, slices.subject_ids.astype(str)), subject_meta={})


def cohorts(seed: int) -> tuple[SliceSet, SliceSet, SliceSet, dict[str, SliceSet]]:
    cfg = PreprocessConfig(size=32)
    real = cohort_to_slices(make_phantom(250, seed=100 + seed), cfg)
    train, holdout, test = (real.for_subjects(real.subjects[a:b]) for a, b in ((0, 100), (100, 200), (200, 250)))
    fresh = cohort_to_slices(make_phantom(100, seed=500 + seed), cfg)
    copies = SliceSet.concat([fresh.for_subjects(fresh.subjects[:90]),
                              _renamed(holdout.for_subjects(holdout.subjects[:5]), "c-h-"),
                              _renamed(test.for_subjects(test.subjects[:5]), "c-t-")])
    return train, holdout, test, {"fresh": fresh, "copies": copies}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="*", choices=CASES)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train, holdout, test, synthetic = cohorts(args.seed)
    for case in args.cases or CASES:
        start = time.time()
        result = RealCopiesAuditor().run(AuditContext(train=train, holdout=holdout, test=test,
                                                      synthetic=synthetic[case], seed=0, quiet=True))
        check = result.checks[0]
        print(json.dumps({"case": case, "seed": args.seed, "wall_s": round(time.time() - start, 1),
                          "verdict": check.verdict.value, "estimate": check.estimate,
                          "confirmed": {split: result.metrics[split]["confirmed"]
                                        for split in result.metrics.get("reference_splits", [])},
                          "details": check.details}), flush=True)


if __name__ == "__main__":
    main()
