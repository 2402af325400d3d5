"""The privacy group against copies of training patients altered in ways a leak might take: does it FAIL them?

100 train / 100 holdout phantom patients and 100 fresh ones as the "synthetic" cohort (as privacy_group_seeds.py),
of which K (default 10) are replaced by copies of training patients under one alteration; the label maps are
altered with the images (nearest neighbour). 32 px, default options and thresholds, no generator.

    python benchmarks/privacy_copy_variants.py [VARIANT ...] [--seed 0] [--copies 10] [--source train|holdout]
        [--auditor NAME]
    (`quarter` / `oneslice`: a quarter of, or one of, a new patient's slices copied; `quarter:CHANGE`: the copied
    slices altered by one of the whole-patient changes, e.g. `quarter:rot20+gamma+noise`; `blend0.5` / `blend0.7`:
    two training patients averaged slice by slice, the first with that weight; `blend3`: three, in equal thirds;
    `shift3.5` / `shift5` / `shift8`: moved by (3.5, -2.5) / (5, -4) / (8, -6) px, edges extended; `crops5`: each slice moved on its own by up
    to 5 px per axis, a memorised random crop; `rot10+shift5` / `rot6+shift6` / `rot15+shift4`: turned, then moved
    by (5, -4) / (-6, 3) / (4, 4) px; `fliplr` / `flipud`: mirrored; `fliplr+shift5`: mirrored and moved by (5, -4) px,
    `rot180+shift5` / `rot90+shift5`: turned by 180 / 90 degrees and moved, `transpose+shift5`: transposed and moved,
    `flipud+rot10+shift5`: mirrored, turned and moved; `zoom1.15+shift5` / `zoom0.87+shift5`: zoomed (shrunk) and
    moved, `rot10+zoom1.15+shift5`: turned, zoomed and moved; `aniso1.15`: rows
    stretched by 1.15, columns shrunk by as much; `cutout12`: a 12-px square of each slice blanked)
    (one JSON line per variant; no variant: all of them)

Measured figures: docs/privacy-checks.md ("Registered search").
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

from auditors.base import AuditContext  # noqa: E402
from auditors.runner import run_auditors  # noqa: E402
from auditors.runner import verdict as run_verdict  # noqa: E402
from cmri_release.audit import run_audit  # noqa: E402
from cmri_release.commands.audit_cmd import parse_options  # noqa: E402
from cmri_release.core.sliceset import SliceSet  # noqa: E402
from privacy_group_seeds import cohorts  # noqa: E402


def _geometric(warp):
    """A change applied alike to the image (bilinear) and its label map (nearest neighbour)."""
    return lambda image, label: (warp(image, 1), warp(label, 0))


def _rotated(degrees):
    return _geometric(lambda x, order: ndimage.rotate(x, degrees, reshape=False, order=order, mode="nearest"))


def _zoomed(factor):
    def warp(x, order):
        c = (x.shape[0] - 1) / 2.0
        return ndimage.affine_transform(x, np.eye(2) / factor, offset=c - c / factor, order=order, mode="nearest")
    return _geometric(warp)


def _elastic(sd_px, rng):
    """A smooth random displacement field (Gaussian, 4 px wide) of `sd_px` per axis, one per slice."""
    def change(image, label):
        n = image.shape[0]
        d = [ndimage.gaussian_filter(rng.standard_normal((n, n)), 4.0) for _ in range(2)]
        yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        where = [yy + sd_px * d[0] / d[0].std(), xx + sd_px * d[1] / d[1].std()]
        return (ndimage.map_coordinates(image, where, order=1, mode="nearest"),
                ndimage.map_coordinates(label, where, order=0, mode="nearest"))
    return change


def _stretched(factor):
    """Anisotropic scaling about the centre: rows by `factor`, columns by 1 / `factor` (an `aniso` augmentation)."""
    def warp(x, order):
        c = (x.shape[0] - 1) / 2.0
        m = np.diag([1.0 / factor, factor])
        return ndimage.affine_transform(x, m, offset=c - m @ np.array([c, c]), order=order, mode="nearest")
    return _geometric(warp)


def _cutout(size, rng):
    """A `size`-px square of each image set to the slice's mean, at a random place (a `cutout` augmentation; the
    label map kept)."""
    def change(image, label):
        y, x = rng.integers(0, image.shape[0] - size + 1, 2)
        out = image.copy()
        out[y:y + size, x:x + size] = image.mean()
        return out, label
    return change


def _shifted(dy, dx):
    return _geometric(lambda x, order: ndimage.shift(x, (dy, dx), order=order, mode="nearest"))


def _random_crops(max_px, rng):
    """Each slice shifted on its own by whole pixels drawn from -max_px..max_px per axis (a random-crop augmentation
    that a generator memorised)."""
    def change(image, label):
        dy, dx = rng.integers(-max_px, max_px + 1, 2)
        return _shifted(int(dy), int(dx))(image, label)
    return change


def _then(first, second):
    """Two changes, one after the other."""
    return lambda image, label: second(*first(image, label))


def _restyled(image, label):
    """Per-structure contrast changes: cavities x 0.75, myocardium x 1.4, everything else to the power 0.8."""
    clipped = np.clip(image, 0.0, None)
    return np.where((label == 1) | (label == 3), 0.75 * clipped, np.where(label == 2, 1.4 * clipped, clipped ** 0.8))


CHANGES = {
    "rot10": lambda rng: _rotated(10.0), "rot20": lambda rng: _rotated(20.0),
    "rot90": lambda rng: _geometric(lambda x, order: np.rot90(x).copy()),
    "transpose": lambda rng: _geometric(lambda x, order: x.T.copy()),
    "shift3.5": lambda rng: _shifted(3.5, -2.5), "shift5": lambda rng: _shifted(5, -4), "shift8": lambda rng: _shifted(8, -6),
    "crops5": lambda rng: _random_crops(5, rng),
    # a turn and a move beyond the small search's 3 px together
    "rot10+shift5": lambda rng: _then(_rotated(10.0), _shifted(5, -4)),
    "rot6+shift6": lambda rng: _then(_rotated(-6.0), _shifted(-6, 3)),
    "rot15+shift4": lambda rng: _then(_rotated(15.0), _shifted(4, 4)),
    # mirrored copies (a flip is a common augmentation): left-right, up-down, and a mirror turned and moved
    "fliplr": lambda rng: _geometric(lambda x, order: x[:, ::-1].copy()),
    "flipud": lambda rng: _geometric(lambda x, order: x[::-1].copy()),
    "fliplr+shift5": lambda rng: _then(_geometric(lambda x, order: x[:, ::-1].copy()), _shifted(5, -4)),
    "rot180+shift5": lambda rng: _then(_geometric(lambda x, order: np.rot90(x, 2).copy()), _shifted(5, -4)),
    "rot90+shift5": lambda rng: _then(_geometric(lambda x, order: np.rot90(x).copy()), _shifted(5, -4)),
    "transpose+shift5": lambda rng: _then(_geometric(lambda x, order: x.T.copy()), _shifted(5, -4)),
    # the rest of a StyleGAN2-ADA-like augmentation pipeline: scale with an integer translation, anisotropic
    # scaling, cutout
    "zoom1.15+shift5": lambda rng: _then(_zoomed(1.15), _shifted(5, -4)),
    # a random resized crop that shrinks, and one turned as well (RandomAffine: turn, scale and move together)
    "zoom0.87+shift5": lambda rng: _then(_zoomed(0.87), _shifted(5, -4)),
    "rot10+zoom1.15+shift5": lambda rng: _then(_rotated(10.0), _then(_zoomed(1.15), _shifted(5, -4))),
    "aniso1.15": lambda rng: _stretched(1.15),
    "cutout12": lambda rng: _cutout(12, rng),
    "flipud+rot10+shift5": lambda rng: _then(_geometric(lambda x, order: x[::-1].copy()),
                                             _then(_rotated(10.0), _shifted(5, -4))),
    "zoom1.15": lambda rng: _zoomed(1.15), "elastic0.7": lambda rng: _elastic(0.7, rng),
    "elastic1.5": lambda rng: _elastic(1.5, rng), "elastic2.5": lambda rng: _elastic(2.5, rng),
    "blur1+noise": lambda rng: (lambda image, label: (ndimage.gaussian_filter(image, 1.0)
                                                      + rng.normal(0.0, 0.03, image.shape), label)),
    "invert": lambda rng: (lambda image, label: (1.0 - image, label)),
    "rot20+gamma+noise": lambda rng: (lambda image, label: (
        np.clip(_rotated(20.0)(image, label)[0], 0.0, None) ** 0.7 + rng.normal(0.0, 0.02, image.shape),
        _rotated(20.0)(image, label)[1])),
    "zoom1.3": lambda rng: _zoomed(1.3), "zoom1.22": lambda rng: _zoomed(1.22), "zoom0.77": lambda rng: _zoomed(0.77),
    "down2up": lambda rng: (lambda image, label: (
        ndimage.zoom(image[::2, ::2], 2.0, order=1, mode="nearest")[:image.shape[0], :image.shape[1]], label)),
    "noise0.1": lambda rng: (lambda image, label: (image + rng.normal(0.0, 0.1, image.shape), label)),
    "noise0.2": lambda rng: (lambda image, label: (image + rng.normal(0.0, 0.2, image.shape), label)),
    # another vendor's contrast over the same anatomy: blood darker, myocardium brighter, the rest under a gamma
    "restyle": lambda rng: (lambda image, label: (_restyled(image, label), label)),
    "restyle+noise": lambda rng: (lambda image, label: (_restyled(image, label)
                                                        + rng.normal(0.0, 0.03, image.shape), label)),
}

# The image channel alone: training images (changed) under other patients' label maps, slice for slice (cycled).
IMAGE_CHANGES = {
    "imagecopy": lambda rng: (lambda image, label: (image, label)),
    "imagecopy_noise0.1": CHANGES["noise0.1"],
    "imagecopy_noise0.2": CHANGES["noise0.2"],
}


MASK_CHANGES = {
    "maskcopy": lambda rng: (lambda image, label: (image, label)),
    "maskcopy_shift2": lambda rng: _geometric(lambda x, order: np.roll(x, (2, -1), axis=(0, 1))),
    "maskcopy_rot20": lambda rng: _rotated(20.0),
    "maskcopy_fliplr+shift5": lambda rng: CHANGES["fliplr+shift5"](rng),
    "maskcopy_rot90+shift5": lambda rng: CHANGES["rot90+shift5"](rng),
}


def mask_copies(source: SliceSet, images_from: SliceSet, change) -> SliceSet:
    """Training patients' label maps (changed) under other patients' images, slice for slice (cycled)."""
    images = images_from.images[np.arange(len(source)) % len(images_from)]
    labels = np.stack([change(image, label)[1] for image, label in zip(source.images, source.labels)])
    return replace(source, images=images, labels=labels.astype(np.uint8),
                   subject_ids=np.char.add("maskcopy-", source.subject_ids.astype(str)))


def altered(slices: SliceSet, change) -> SliceSet:
    pairs = [change(image, label) for image, label in zip(slices.images, slices.labels)]
    return replace(slices, images=np.stack([p[0] for p in pairs]).astype(np.float32),
                   labels=np.stack([p[1] for p in pairs]).astype(np.uint8),
                   subject_ids=np.char.add("copy-", slices.subject_ids.astype(str)))


def _rows(s: SliceSet, keep: np.ndarray, subject: str, vendor: str | None = None) -> SliceSet:
    return replace(s, images=s.images[keep], labels=s.labels[keep], subject_ids=np.full(keep.sum(), subject),
                   vendors=s.vendors[keep] if vendor is None else np.full(keep.sum(), vendor),
                   phases=s.phases[keep], slice_pos=s.slice_pos[keep], slice_index=s.slice_index[keep],
                   has_label=s.has_label[keep])


def synthetic_cohort(name: str, train: SliceSet, fresh: SliceSet, k: int, rng) -> SliceSet:
    honest = fresh.for_subjects(fresh.subjects[:len(fresh.subjects) - k])
    source = train.for_subjects(train.subjects[:k])
    if name == "fresh":
        return fresh
    if name in CHANGES:
        return SliceSet.concat([honest, altered(source, CHANGES[name](rng))])
    if name in IMAGE_CHANGES:
        images = altered(source, IMAGE_CHANGES[name](rng))
        labels_from = fresh.for_subjects(fresh.subjects[-k:]).labels
        return SliceSet.concat([honest, replace(images, labels=labels_from[np.arange(len(images)) % len(labels_from)])])
    if name.startswith("maskcopy"):  # a mask generator that memorised: training label maps, fresh images
        return SliceSet.concat([honest, mask_copies(source, fresh.for_subjects(fresh.subjects[-k:]),
                                                    MASK_CHANGES[name](rng))])
    if name == "half":  # every other slice of a training patient, the rest from a fresh one
        parts = []
        for j in range(k):
            t = train.for_subjects([train.subjects[j]])
            f = fresh.for_subjects([fresh.subjects[len(fresh.subjects) - k + j]])
            parts += [_rows(t, np.arange(len(t)) % 2 == 0, f"mix-{j}"),
                      _rows(f, np.arange(len(f)) % 2 == 1, f"mix-{j}", str(t.vendors[0]))]
        return SliceSet.concat([honest] + parts)
    if name.partition(":")[0] in PARTIAL:
        # a share of a fresh patient's slices replaced by a training patient's ("quarter:CHANGE": altered by CHANGE)
        name, _, change = name.partition(":")
        source = altered(source, CHANGES[change](rng)) if change else source
        parts = []
        for j in range(k):
            t = source.for_subjects([source.subjects[j]])
            f = fresh.for_subjects([fresh.subjects[len(fresh.subjects) - k + j]])
            n = min(len(t), len(f))
            copied = (np.arange(n) % 4 == 0) if name == "quarter" else (np.arange(n) == n // 2)
            parts += [_rows(t, np.pad(copied, (0, len(t) - n)), f"part-{j}"),
                      _rows(f, np.pad(~copied, (0, len(f) - n), constant_values=True), f"part-{j}",
                            str(t.vendors[0]))]
        return SliceSet.concat([honest] + parts)
    if name in BLENDS:  # a generator that interpolates: each slice a weighted mean of training patients'
        weights, parts = BLENDS[name], []
        for j in range(k):
            parents = [train.for_subjects([train.subjects[m * k + j]]) for m in range(len(weights))]
            n = min(len(p) for p in parents)
            mixed = _rows(parents[0], np.arange(len(parents[0])) < n, f"blend-{j}")
            image = sum(w * p.images[:n] for w, p in zip(weights, parents))
            parts.append(replace(mixed, images=image.astype(np.float32)))
        return SliceSet.concat([honest] + parts)
    if name == "slicemix":  # k synthetic patients, each slice copied from any of k training patients
        ids = np.array([f"mix-{i % k}" for i in rng.permutation(len(source))])
        return SliceSet.concat([honest, replace(source, subject_ids=ids)])
    raise ValueError(f"unknown variant {name!r}")


PARTIAL = ("quarter", "oneslice")  # a share of a new patient's slices copied; "NAME:CHANGE" alters the copies
# training patients blended slice by slice (same rank) with these weights; label maps of the first
BLENDS = {"blend0.5": (0.5, 0.5), "blend0.7": (0.7, 0.3), "blend3": (1 / 3, 1 / 3, 1 / 3)}
VARIANTS = ("fresh", *CHANGES, "half", *PARTIAL, *BLENDS, "slicemix", *MASK_CHANGES, *IMAGE_CHANGES)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="*", help=f"any of {', '.join(VARIANTS)} (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--source", choices=("train", "holdout"), default="train",
                    help="whose patients are copied: training patients (the copy search's job) or holdout patients "
                         "(real patients the generator never saw: `privacy.real_patient_copies`' job)")
    ap.add_argument("--auditor", default=None, help="run this privacy auditor alone (e.g. real_copies), not the group")
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="an audit option, as the CLI's --option (repeatable)")
    args = ap.parse_args()
    options = parse_options(None, None, args.option)
    unknown = [v for v in args.variants if v not in VARIANTS and not (
        v.partition(":")[0] in PARTIAL and v.partition(":")[2] in CHANGES)]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    train, hold, fresh = cohorts(args.seed, 0, 100)
    for name in args.variants or VARIANTS:
        source = train if args.source == "train" else hold
        synthetic = synthetic_cohort(name, source, fresh, args.copies, np.random.default_rng([args.seed, 1]))
        start = time.time()
        if args.auditor:
            results = run_auditors(AuditContext(train=train, holdout=hold, synthetic=synthetic, seed=args.seed,
                                                quiet=True, options=options), ["privacy"], names=[args.auditor])
            checks, result_verdict = [c for r in results for c in r.checks], run_verdict(results)
        else:
            report = run_audit(train, hold, synthetic, groups=["privacy"], seed=args.seed, quiet=True,
                               options=options)
            results, checks, result_verdict = report.results, report.checks, report.verdict
        confirmed = [m for r in results for m in r.metrics.get("confirmed_copies", [])]
        unsettled = [m for r in results for m in r.metrics.get("unsettled_copies", [])]  # between the two bars
        print(json.dumps({"variant": name, "source": args.source, "seed": args.seed, "options": options,
                          "auditor": args.auditor, "copies": 0 if name == "fresh" else args.copies,
                          "verdict": str(getattr(result_verdict, "value", result_verdict)),
                          "confirmed": len(confirmed), "unsettled": len(unsettled), "wall_s": round(time.time() - start, 1),
                          "checks": {c.name: [str(getattr(c.verdict, "value", c.verdict)), c.estimate, c.lower, c.upper]
                                     for c in checks}},
                         default=lambda v: None if v is None else round(float(v), 4)), flush=True)


if __name__ == "__main__":
    main()
