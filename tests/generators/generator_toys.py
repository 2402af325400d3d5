"""Tiny preprocessed SliceSets with known anatomy for the generator tests (no phantom, no files).

Each subject: an LV cavity disk inside a myocardium ring and an RV crescent beside it, shrinking from base to apex
(the RV vanishing near the apex), smaller at ES; vendor-dependent intensities, noise and blur, so that a generator
must learn both the anatomy and the vendor's look.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from cmri_release.core.labels import LV, MYO, RV
from cmri_release.core.sliceset import SliceSet

# vendor -> (background, RV, MYO, LV) mean intensity, noise sd, blur sigma (pixels)
VENDOR_LOOK = {"A": ((0.15, 0.80, 0.30, 0.90), 0.03, 0.0), "B": ((0.35, 0.60, 0.15, 0.70), 0.08, 0.8)}
GROUP_SIZE = {"NOR": 1.0, "DCM": 1.3}


def draw_slice(size: int, centre, r_lv: float, wall: float, rv_angle: float, rv_scale: float) -> np.ndarray:
    ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    d = np.hypot(ii - centre[0], jj - centre[1])
    label = np.zeros((size, size), np.uint8)
    if rv_scale > 0:
        r_epi = r_lv + wall
        off = np.array([np.sin(rv_angle), np.cos(rv_angle)]) * r_epi * 0.9
        d_rv = np.hypot(ii - centre[0] - off[0], jj - centre[1] - off[1])
        label[(d_rv < r_epi * rv_scale) & (d >= r_epi)] = RV
    label[d < r_lv + wall] = MYO
    label[d < r_lv] = LV
    return label


def toy_slices(n_subjects: int = 6, size: int = 32, seed: int = 0, vendors=("A", "B"), prefix: str = "t") -> SliceSet:
    rng = np.random.default_rng(seed)
    parts = {k: [] for k in ("images", "labels", "subject_ids", "vendors", "phases", "slice_pos", "slice_index")}
    meta = {}
    for s in range(n_subjects):
        sid = f"{prefix}{seed:02d}-{s:03d}"
        vendor = vendors[s % len(vendors)]
        group = ("NOR", "DCM")[s % 2]
        means, noise, blur = VENDOR_LOOK[vendor]
        n_slices = int(rng.integers(5, 9))
        centre = size / 2 + rng.uniform(-2, 2, 2) * size / 32
        r0 = size * rng.uniform(0.13, 0.17) * GROUP_SIZE[group]
        wall = size * rng.uniform(0.05, 0.07)
        angle = np.pi + rng.uniform(-0.4, 0.4)
        for phase, shrink, thick in (("ED", 1.0, 1.0), ("ES", 0.72, 1.35)):
            for z in range(n_slices):
                p = z / (n_slices - 1)
                r_lv = r0 * shrink * (1 - 0.6 * p)
                lab = draw_slice(size, centre, r_lv, wall * thick * (1 - 0.3 * p), angle,
                                 1.4 if p < 0.8 else 0.0)
                img = np.choose(lab, means).astype(np.float64)
                if blur:
                    img = ndimage.gaussian_filter(img, blur)
                img = np.clip(img + rng.normal(0, noise, img.shape), 0, 1)
                parts["images"].append(img.astype(np.float32))
                parts["labels"].append(lab)
                parts["subject_ids"].append(sid)
                parts["vendors"].append(vendor)
                parts["phases"].append(phase)
                parts["slice_pos"].append(p)
                parts["slice_index"].append(z)
        meta[sid] = {"vendor": vendor, "centre": f"C-{vendor}", "group": group, "thickness_mm": 8.0 + s % 3,
                     "n_frames": 25, "frame_index": {"ED": 1, "ES": 10},
                     "intensity": {"kind": "percentile", "low": 10.0 * (1 + s), "high": 500.0 + 10 * s},
                     "height": 170.0 + s, "weight": 70.0 + s}
    arrays = {k: np.stack(v) if k in ("images", "labels") else np.array(v) for k, v in parts.items()}
    return SliceSet(**arrays, has_label=np.ones(len(arrays["images"]), bool), spacing_mm=2.5, subject_meta=meta)


