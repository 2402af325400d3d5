"""Known faults made from real slices: what every fidelity default must catch (tests, calibration, docs).

Each takes a SliceSet whose intensities span about [0, 1] (the percentile normalisation) and returns
the same patients, masks and metadata with degraded images. Amplitudes are fractions of that range.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from cmri_release.core.sliceset import SliceSet

KINDS = ("noise", "blur", "blotches", "shuffle")


def with_images(slices: SliceSet, images: np.ndarray) -> SliceSet:
    return SliceSet(images=images.astype(np.float32), labels=slices.labels, subject_ids=slices.subject_ids,
                    vendors=slices.vendors, phases=slices.phases, slice_pos=slices.slice_pos,
                    slice_index=slices.slice_index, has_label=slices.has_label, spacing_mm=slices.spacing_mm,
                    subject_meta=slices.subject_meta)


def degrade(slices: SliceSet, kind: str, seed: int = 0, amount: float | None = None) -> SliceSet:
    """`noise`: Gaussian noise, sd 5% of the range; `blur`: Gaussian blur, sigma 1 px; `blotches`: a smooth
    random field (sigma 3 px) of sd 10% of the range; `shuffle`: each slice's pixels permuted inside each label."""
    rng = np.random.default_rng(seed)
    x = slices.images.astype(np.float64)
    if kind == "noise":
        out = x + rng.normal(0, 0.05 if amount is None else amount, x.shape)
    elif kind == "blur":
        out = ndimage.gaussian_filter(x, sigma=(0, 1.0 if amount is None else amount,
                                                1.0 if amount is None else amount), mode="nearest")
    elif kind == "blotches":
        field = ndimage.gaussian_filter(rng.normal(size=x.shape), sigma=(0, 3.0, 3.0), mode="wrap")
        field /= field.std(axis=(1, 2), keepdims=True)
        out = x + (0.1 if amount is None else amount) * field
    elif kind == "shuffle":
        out = x.copy()
        for i in range(len(x)):
            for code in np.unique(slices.labels[i]):
                where = np.flatnonzero(slices.labels[i].ravel() == code)
                flat = out[i].reshape(-1)
                flat[where] = flat[rng.permutation(where)]
    else:
        raise ValueError(f"unknown degradation {kind!r}; known: {', '.join(KINDS)}")
    return with_images(slices, out)


def shrink_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """Every slice's label map scaled by `factor` about the image centre (nearest neighbour): an anatomy fault
    (0.9: volumes x 0.81) that the image checks cannot see and the clinical indices must."""
    out = np.empty_like(labels)
    c = (labels.shape[-1] - 1) / 2
    m = np.eye(2) / factor
    for i, lab in enumerate(labels):
        out[i] = ndimage.affine_transform(lab, m, offset=c - m @ np.array([c, c]), order=0)
    return out
