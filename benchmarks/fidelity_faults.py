"""The whole fidelity group on real new patients under faults a reviewer would reject, beyond the four of issue 15.

The cohorts of `privacy_group_seeds.py` (100 train / 100 holdout of one phantom seed, 100 fresh patients of another
as the "synthetic" cohort, 32 px); each fault changes the fresh patients, and the fidelity group is audited with
default options and thresholds. A fault a reviewer would reject must not PASS; the fresh patients unchanged are the
honest baseline (pass or inconclusive at this size: docs/fidelity-utility-checks.md).

    python benchmarks/fidelity_faults.py [--seed 0] [FAULT ...] > OUT.jsonl   (one JSON line per fault)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from privacy_group_seeds import cohorts  # noqa: E402

from cmri_release.audit import run_audit  # noqa: E402
from cmri_release.core.labels import LV, RV  # noqa: E402


def _images(s, f):
    return replace(s, images=f(s.images.astype(np.float64)).astype(np.float32))


def _both(s, f):
    """The same geometric change of every image and its label map."""
    return replace(s, images=np.stack([f(x) for x in s.images]).astype(np.float32),
                   labels=np.stack([f(y) for y in s.labels]).astype(np.uint8))


def _gamma(x, g):
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    u = (x - lo) / np.maximum(hi - lo, 1e-6)
    return lo + (hi - lo) * u ** g


def _down_up(x):
    small = ndimage.zoom(x, (1, 0.5, 0.5), order=1)
    return ndimage.zoom(small, (1, x.shape[1] / small.shape[1], x.shape[2] / small.shape[2]), order=1)


def _quantise(x, levels):
    lo, hi = x.min(), x.max()
    return lo + np.round((x - lo) / (hi - lo) * (levels - 1)) / (levels - 1) * (hi - lo)


def _swap_lv_rv(labels):
    out = labels.copy()
    out[labels == LV], out[labels == RV] = RV, LV
    return out


def _vendor_cycle(vendors):
    names = sorted(set(vendors.tolist()))
    shift = {v: names[(i + 1) % len(names)] for i, v in enumerate(names)}
    return np.array([shift[v] for v in vendors.tolist()])


def _some_patients(s, share, change):
    """`change` (a SliceSet -> SliceSet of the same slices) applied to the first `share` of the patients only."""
    broken = set(s.subjects[:max(1, round(share * len(s.subjects)))])
    keep = np.array([sid in broken for sid in s.subject_ids.tolist()])
    changed = change(s)
    return replace(s, images=np.where(keep[:, None, None], changed.images, s.images).astype(np.float32),
                   labels=np.where(keep[:, None, None], changed.labels, s.labels).astype(np.uint8))


def _noise_images(x, seed=0):
    """Each slice replaced by white noise of its own mean and spread: no anatomy at all."""
    rng = np.random.default_rng(seed)
    return rng.normal(x.mean(axis=(1, 2), keepdims=True), x.std(axis=(1, 2), keepdims=True), x.shape)


def _degraded(s, name, seed=0):
    from auditors.fidelity.degradations import degrade
    return degrade(s, name, seed=seed)


FAULTS = {
    "none": lambda s: s,
    "gamma0.6": lambda s: _images(s, lambda x: _gamma(x, 0.6)),
    "gamma1.6": lambda s: _images(s, lambda x: _gamma(x, 1.6)),
    "inverted": lambda s: _images(s, lambda x: -x),
    "down2up": lambda s: _images(s, _down_up),
    "quantised8": lambda s: _images(s, lambda x: _quantise(x, 8)),
    "flip_lr": lambda s: _both(s, lambda a: a[:, ::-1].copy()),
    "rot90": lambda s: _both(s, lambda a: np.rot90(a).copy()),
    "labels_shifted3": lambda s: replace(s, labels=np.roll(s.labels, (3, 3), axis=(1, 2))),
    "labels_lv_rv_swapped": lambda s: replace(s, labels=_swap_lv_rv(s.labels)),
    "vendors_cycled": lambda s: replace(s, vendors=_vendor_cycle(s.vendors)),
    "one_vendor_named": lambda s: replace(s, vendors=np.full(len(s.vendors), sorted(set(s.vendors.tolist()))[0])),
    "phases_swapped": lambda s: replace(s, phases=np.where(s.phases == "ED", "ES", "ED")),
    # a minority of broken patients among good ones: a reviewer rejects a cohort with any share of them
    "noise_patients10": lambda s: _some_patients(s, 0.1, lambda t: _images(t, _noise_images)),
    "noise_patients20": lambda s: _some_patients(s, 0.2, lambda t: _images(t, _noise_images)),
    "blank_patients10": lambda s: _some_patients(s, 0.1, lambda t: _images(t, lambda x: np.zeros_like(x))),
    "blur_patients20": lambda s: _some_patients(s, 0.2, lambda t: _degraded(t, "blur")),
    "masks_mismatched20": lambda s: _some_patients(s, 0.2, lambda t: replace(t, labels=np.roll(t.labels, 7, axis=0))),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("faults", nargs="*", help=f"any of {', '.join(FAULTS)} (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    unknown = [f for f in args.faults if f not in FAULTS]
    if unknown:
        ap.error(f"unknown fault(s) {unknown}; choose from {', '.join(FAULTS)}")
    train, hold, fresh = cohorts(args.seed, 0)
    for name in args.faults or FAULTS:
        start = time.time()
        report = run_audit(train, hold, FAULTS[name](fresh), groups=["fidelity"], seed=args.seed, quiet=True)
        checks = {c.name: [str(getattr(c.verdict, "value", c.verdict)), c.estimate, c.lower, c.upper]
                  for c in report.checks}
        print(json.dumps({"fault": name, "seed": args.seed, "verdict": str(getattr(report.verdict, "value",
                                                                                    report.verdict)),
                          "failing": sorted(k for k, v in checks.items() if v[0] != "pass"),
                          "wall_s": round(time.time() - start, 1), "checks": checks},
                         default=lambda v: round(float(v), 5)), flush=True)


if __name__ == "__main__":
    main()
