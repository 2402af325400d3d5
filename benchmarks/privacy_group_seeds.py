"""A whole audit group (privacy by default, or fidelity) on honest phantom cohorts, seed after seed: does a fresh
cohort PASS?

100 train / 100 holdout patients (one phantom seed, split by alternate patients) and 100 fresh patients of another
seed as the "synthetic" cohort (a perfect generator that never saw train), 32 px, default options and thresholds,
no generator (black-box attacks only). Issues 14 (privacy) and 15 (fidelity) ask that such a cohort passes in at
least 19 of 20 seeds.

    python benchmarks/privacy_group_seeds.py FIRST_SEED END_SEED [--copies K] [--group fidelity] [--synthetic 300] [--real 250]
        [--test 50] [--split random] [--scores DIR]
    (one JSON line per seed; with --scores, every copy-confirmation part's per-patient null and synthetic scores
    go to DIR/seed_N.npz, to study the confirmation rule's margins offline)

With --copies K, K of the 100 synthetic patients are replaced by exact copies of training patients (must fail).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmri_release.audit import run_audit  # noqa: E402
from cmri_release.core.sliceset import SliceSet  # noqa: E402
from cmri_release.phantom import make_phantom  # noqa: E402
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices  # noqa: E402


def cohorts(seed: int, copies: int, synthetic: int = 100, real_patients: int = 200):
    """(train, holdout, synthetic): what the other benchmarks audit."""
    return with_test(seed, copies, synthetic, real_patients)[:3]


def with_test(seed: int, copies: int, synthetic: int = 100, real_patients: int = 200, test: int = 0,
              split: str = "alternate"):
    """(train, holdout, synthetic, test or None). `split`: "alternate": real patients of one phantom seed to train
    and holdout alternately, the fresh ones from another seed (the recorded figures); "random": train, holdout, fresh
    and test patients one seeded random partition of a single phantom cohort, so that all are exchangeable. The
    phantom cycles its groups (period 5) and vendors (3) over patients: below 30 real patients the alternate split
    gives train and holdout nearly disjoint (group, vendor) pairs (16 patients: 1 of 8 holdout patients shares its
    pair with a training patient, 4 of 8 fresh ones), and any split of so few patients leaves the holdout's pairs
    mostly outside train while fresh patients of another seed repeat them: the holdout then does not stand for new
    patients as the fresh ones do."""
    cfg = PreprocessConfig(size=32)
    if split == "random":
        pool = cohort_to_slices(make_phantom(real_patients + synthetic + test, seed=100 + seed), cfg)
        ids = [pool.subjects[i] for i in np.random.default_rng([seed, 7]).permutation(len(pool.subjects))]
        first, rest = ids[:real_patients], ids[real_patients:]
        train, hold = pool.for_subjects(first[0::2]), pool.for_subjects(first[1::2])
        fresh = pool.for_subjects(rest[:synthetic])
        tested = pool.for_subjects(rest[synthetic:]) if test else None
    else:
        # The test patients are drawn after the train / holdout ones: those stay the same whatever `test` is.
        real = cohort_to_slices(make_phantom(real_patients + test, seed=100 + seed), cfg)
        first = real.subjects[:real_patients]
        train, hold = real.for_subjects(first[0::2]), real.for_subjects(first[1::2])
        tested = real.for_subjects(real.subjects[real_patients:]) if test else None
        # The first 100 fresh patients are the same whatever `synthetic` is (the phantom draws patient by patient).
        fresh = cohort_to_slices(make_phantom(synthetic, seed=500 + seed), cfg)
    if not copies:
        return train, hold, fresh, tested
    cp = train.for_subjects(train.subjects[:copies])
    cp = SliceSet(images=cp.images, labels=cp.labels, subject_ids=np.char.add("copy-", cp.subject_ids.astype(str)),
                  vendors=cp.vendors, phases=cp.phases, slice_pos=cp.slice_pos, slice_index=cp.slice_index,
                  has_label=cp.has_label, spacing_mm=cp.spacing_mm)
    return train, hold, SliceSet.concat([fresh.for_subjects(fresh.subjects[:synthetic - copies]), cp]), tested


class PartRecorder:
    """Wraps `near_copies` where the two copy auditors call it and keeps each part's per-patient scores."""

    def __init__(self):
        from auditors.privacy import memorisation, real_copies
        self.modules, self.original, self.parts = (memorisation, real_copies), memorisation.near_copies, {}

    def __enter__(self):
        def recording(part, n_synthetic, folds):
            found = self.original(part, n_synthetic, folds)
            owner = "real_copies" if "real_copies" in sys._getframe(1).f_code.co_filename else "memorisation"
            self.parts[f"{owner}.{part.label}.null"] = np.asarray(part.holdout, dtype=np.float64)
            self.parts[f"{owner}.{part.label}.synthetic"] = np.asarray(part.synthetic, dtype=np.float64)
            return found
        for module in self.modules:
            module.near_copies = recording
        return self

    def __exit__(self, *exc):
        for module in self.modules:
            module.near_copies = self.original


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("first", type=int)
    ap.add_argument("end", type=int)
    ap.add_argument("--copies", type=int, default=0)
    ap.add_argument("--group", choices=("privacy", "fidelity"), default="privacy")
    ap.add_argument("--synthetic", type=int, default=100, help="fresh patients standing in for the synthetic cohort")
    ap.add_argument("--real", type=int, default=200, help="real patients, split by alternate patients into train / holdout")
    ap.add_argument("--split", choices=("alternate", "random"), default="alternate",
                    help="alternate patients to train / holdout and fresh ones of another seed, or one seeded random partition "
                         "of a single cohort (use below 30 real patients)")
    ap.add_argument("--test", type=int, default=0, help="real test patients besides (as the demo has: the "
                    "real-patient copy search then covers holdout and test)")
    ap.add_argument("--scores", type=Path, help="folder for each seed's per-part copy scores (npz)")
    args = ap.parse_args()
    for seed in range(args.first, args.end):
        train, hold, syn, test = with_test(seed, args.copies, args.synthetic, args.real, args.test, args.split)
        t = time.time()
        with PartRecorder() as recorder:
            report = run_audit(train, hold, syn, test=test, groups=[args.group], seed=seed, quiet=True)
        if args.scores:
            args.scores.mkdir(parents=True, exist_ok=True)
            np.savez(args.scores / f"seed_{seed}.npz", **recorder.parts)
        print(json.dumps({"seed": seed, "group": args.group, "copies": args.copies, "synthetic": args.synthetic, "real": args.real, "test": args.test,
                          "split": args.split, "verdict": str(getattr(report.verdict, "value", report.verdict)),
                          "wall_s": round(time.time() - t, 1),
                          "checks": {c.name: [str(getattr(c.verdict, "value", c.verdict)), c.estimate, c.lower, c.upper] for c in report.checks}},
                         default=lambda v: None if v is None else round(float(v), 4)), flush=True)


if __name__ == "__main__":
    main()
