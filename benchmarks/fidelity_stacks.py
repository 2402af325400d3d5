"""The stacks checks (`fidelity.atypical_stack_rate`, `fidelity.incoherent_stack_rate`) on honest, reordered,
assembled and generated stacks, seed by seed.

Per seed, 100 train / 100 holdout phantom patients and 100 fresh ones (privacy_group_seeds.cohorts, 32 px); the
"synthetic" cohort is the fresh patients as they are (an honest generator), with every stack read apex first
(`reversed`), in a random order (`shuffled`), with one pair of neighbouring slices swapped per stack (`one swap`),
or with only a share of the patients reversed (`reversed N%`); every slice replaced by the slice at the nearest
position of a random other fresh patient (`assembled`, image and label map together; `assembled N%`: that share of
the patients); and the label maps of the project's mask generator (`generators/masks.MaskModel` fitted on the train
patients, 100 sampled; no images, so only the profile check is reported). One JSON line per seed and cohort.

    python benchmarks/fidelity_stacks.py FIRST END

Measured figures: docs/fidelity-utility-checks.md ("fidelity.atypical_stack_rate").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from auditors.base import AuditContext  # noqa: E402
from auditors.fidelity.degradations import stack_fault  # noqa: E402
from auditors.fidelity.stacks import StacksAuditor  # noqa: E402
from cmri_release.core.sliceset import SliceSet  # noqa: E402
from generators.masks import PHASE_ORDER, MaskModel  # noqa: E402
from privacy_group_seeds import cohorts  # noqa: E402


def mask_model_stacks(train: SliceSet, n: int, seed: int) -> SliceSet:
    """`n` patients of label maps from the mask generator fitted on `train`, as synthesis lays them out."""
    parts = {k: [] for k in ("labels", "subject_ids", "phases", "slice_pos", "slice_index")}
    for number, stack in enumerate(MaskModel().fit(train).sample(n, seed, size=train.images.shape[-1])):
        depth = len(stack.labels[PHASE_ORDER[0]])
        for phase in PHASE_ORDER:
            parts["labels"].append(stack.labels[phase])
            parts["subject_ids"].append(np.full(depth, f"mask-{number:03d}"))
            parts["phases"].append(np.full(depth, phase))
            parts["slice_pos"].append(np.arange(depth) / max(depth - 1, 1))
            parts["slice_index"].append(np.arange(depth))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    n_slices = len(arrays["labels"])
    return SliceSet(images=np.zeros(arrays["labels"].shape, np.float32), vendors=np.full(n_slices, "A"),
                    has_label=np.ones(n_slices, bool), spacing_mm=train.spacing_mm, **arrays)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("first", type=int)
    ap.add_argument("end", type=int)
    args = ap.parse_args()
    variants = [("fresh", None, 1.0), ("reversed", "reversed", 1.0), ("shuffled", "shuffled", 1.0),
                ("one swap", "swap", 1.0), ("reversed 10%", "reversed", 0.1), ("reversed 30%", "reversed", 0.3),
                ("assembled", "assembled", 1.0), ("assembled 30%", "assembled", 0.3), ("mask generator", None, 1.0)]
    for seed in range(args.first, args.end):
        train, hold, fresh = cohorts(seed, 0, 100)
        for name, kind, share in variants:
            rng = np.random.default_rng([seed, 7])
            if name == "mask generator":
                synthetic = mask_model_stacks(train, 100, seed)
            elif kind is None:
                synthetic = fresh
            else:
                chosen = rng.permutation(len(fresh.subjects))[:round(share * len(fresh.subjects))]
                synthetic = stack_fault(fresh, kind, [fresh.subjects[i] for i in chosen], seed=seed)
            start = time.time()
            result = StacksAuditor().run(AuditContext(train=train, holdout=hold, synthetic=synthetic, seed=seed,
                                                            quiet=True))
            line = {"seed": seed, "cohort": name, "wall_s": round(time.time() - start, 2)}
            for check, key in zip(result.checks, ("profile", "coherence")):
                if name == "mask generator" and key == "coherence":
                    continue  # label maps only
                found = result.metrics[key]
                line[check.name] = {"verdict": str(getattr(check.verdict, "value", check.verdict)),
                                    "estimate": check.estimate, "lower": check.lower, "upper": check.upper,
                                    "bar": -found["rate"]["tau"], "holdout_median": found["holdout_median"],
                                    "synthetic_median": found["synthetic_median"]}
            print(json.dumps(line, default=lambda v: round(float(v), 4)), flush=True)


if __name__ == "__main__":
    main()
