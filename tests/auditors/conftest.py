"""Fixtures for the fidelity, utility and segmentation tests: tiny short-axis-like slices built in memory.

Each subject is an LV ring (cavity + myocardium) with an RV beside it, shrinking from base to
apex and from ED to ES, with a vendor-specific contrast, smooth texture and noise: enough for a
segmenter to learn in seconds and for a generator's faults to show.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cmri_release.core.sliceset import SliceSet

# vendor -> (blood, myocardium, background) mean intensities
VENDOR_CONTRAST = {"A": (0.85, 0.30, 0.12), "B": (0.70, 0.38, 0.22), "C": (0.95, 0.22, 0.06)}


def make_heart_slices(n_subjects: int, size: int = 32, seed: int = 0, vendors: str = "ABC",
                      slices_per_phase: int = 4, prefix: str = "s") -> SliceSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    parts = {k: [] for k in ("images", "labels", "subject_ids", "vendors", "phases", "slice_pos", "slice_index")}
    meta = {}
    for s in range(n_subjects):
        vendor = vendors[s % len(vendors)]
        contrast = np.array(VENDOR_CONTRAST[vendor]) * rng.uniform(0.92, 1.08)  # per-patient gain
        r0, wall = size * rng.uniform(0.12, 0.22), size * rng.uniform(0.05, 0.08)
        cy, cx = size / 2 + rng.uniform(-3, 3, size=2) * size / 32
        rv_angle = rng.uniform(0.75, 1.25) * np.pi  # the RV lies on the left, at a patient-specific angle
        sid = f"{prefix}{seed}-{s:03d}"
        meta[sid] = {"vendor": vendor, "thickness_mm": 8.0}
        for phase, scale in (("ED", 1.0), ("ES", rng.uniform(0.65, 0.8))):
            for z in range(slices_per_phase):
                taper = 1 - 0.6 * z / max(slices_per_phase - 1, 1)  # base to apex
                r = r0 * scale * taper
                label = np.zeros((size, size), np.uint8)
                rv_r = (r0 + wall) * 0.9 * (scale + 1) / 2 * (1 - 0.8 * z / max(slices_per_phase - 1, 1))
                ry, rx = cy + 1.7 * (r + wall) * np.sin(rv_angle), cx + 1.7 * (r + wall) * np.cos(rv_angle)
                label[np.hypot(yy - ry, xx - rx) < rv_r] = 1
                d = np.hypot(yy - cy, xx - cx)
                label[d < r + wall] = 2
                label[d < r] = 3
                image = np.choose(label, [contrast[2], contrast[0], contrast[1], contrast[0]]).astype(np.float32)
                image += 0.05 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.5)
                image = ndimage.gaussian_filter(image + rng.normal(0, 0.03, (size, size)), 0.6)
                parts["images"].append(np.clip(image, 0, 1))
                parts["labels"].append(label)
                parts["subject_ids"].append(sid)
                parts["vendors"].append(vendor)
                parts["phases"].append(phase)
                parts["slice_pos"].append(z / max(slices_per_phase - 1, 1))
                parts["slice_index"].append(z)
    n = len(parts["images"])
    return SliceSet(images=np.stack(parts["images"]), labels=np.stack(parts["labels"]),
                    subject_ids=parts["subject_ids"], vendors=parts["vendors"], phases=parts["phases"],
                    slice_pos=parts["slice_pos"], slice_index=parts["slice_index"], has_label=np.ones(n, bool),
                    spacing_mm=160.0 / size, subject_meta=meta)


def replace(slices: SliceSet, images=None, labels=None) -> SliceSet:
    """The same slices with other images and/or labels (a faulty generator's output)."""
    return SliceSet(images=slices.images if images is None else images,
                    labels=slices.labels if labels is None else labels, subject_ids=slices.subject_ids,
                    vendors=slices.vendors, phases=slices.phases, slice_pos=slices.slice_pos,
                    slice_index=slices.slice_index, has_label=slices.has_label, spacing_mm=slices.spacing_mm,
                    subject_meta=slices.subject_meta)


def faulty(kind: str, good: SliceSet, seed: int = 0) -> SliceSet:
    """The three faults every fidelity/utility default must catch, made from a good synthetic set."""
    rng = np.random.default_rng(seed)
    if kind == "good":
        return good
    if kind == "shuffled_labels":  # images fine, masks belong to other slices
        return replace(good, labels=good.labels[rng.permutation(len(good))])
    if kind == "mode_collapse":  # one slice (image and its mask) again and again, with faint noise
        i = len(good) // 3
        images = good.images[[i] * len(good)] + rng.normal(0, 0.01, good.images.shape).astype(np.float32)
        return replace(good, images=images, labels=good.labels[[i] * len(good)])
    if kind == "noise":  # masks fine, images replaced by uniform noise
        return replace(good, images=rng.uniform(0, 1, good.images.shape).astype(np.float32))
    raise ValueError(kind)


@pytest.fixture(scope="session")
def heart_splits() -> dict[str, SliceSet]:
    """Disjoint patients: train 12, holdout 6, test 6, and 6 more real ones as a perfect generator's output."""
    return {"train": make_heart_slices(12, seed=0, prefix="tr"), "holdout": make_heart_slices(6, seed=1, prefix="ho"),
            "test": make_heart_slices(6, seed=2, prefix="te"), "synthetic": make_heart_slices(6, seed=3, prefix="sy")}


@pytest.fixture(scope="session")
def make_faulty():
    """`make_faulty(kind, good)`: kind is good, shuffled_labels, mode_collapse or noise."""
    return faulty


@pytest.fixture(scope="session")
def heart_slices():
    """The builder itself, for tests that need other sizes or vendor mixes."""
    return make_heart_slices
