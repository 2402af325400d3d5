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


STACK_FAULTS = ("reversed", "shuffled", "swap", "assembled")


def stack_fault(slices: SliceSet, kind: str, patients=None, seed: int = 0) -> SliceSet:
    """Through-plane faults of the listed patients (ids; default all), slices untouched: `reversed` (read apex
    first), `shuffled` (a random order), `swap` (one pair of neighbouring slices exchanged), each per phase, by
    changing `slice_pos`; `assembled`: every slice replaced by the slice (image and label map) at the nearest
    position of a random other patient, in the same phase: plausible slices in a plausible order, not one body."""
    if kind not in STACK_FAULTS:
        raise ValueError(f"unknown stack fault {kind!r}; known: {', '.join(STACK_FAULTS)}")
    rng = np.random.default_rng(seed)
    codes, subjects = slices.subject_codes()
    chosen = set(range(len(subjects))) if patients is None else {subjects.index(p) for p in patients}
    pos, rows = slices.slice_pos.copy(), np.arange(len(slices))
    for patient in sorted(chosen):
        for phase in np.unique(slices.phases):
            own = np.flatnonzero((codes == patient) & (slices.phases == phase))
            own = own[np.argsort(pos[own], kind="stable")]
            if kind == "reversed":
                pos[own] = 1.0 - pos[own]
            elif kind == "shuffled":
                pos[own] = rng.permutation(pos[own])
            elif kind == "swap" and len(own) > 2:
                i = int(rng.integers(0, len(own) - 1))
                pos[own[i]], pos[own[i + 1]] = pos[own[i + 1]], pos[own[i]]
            elif kind == "assembled" and len(subjects) > 1:
                for row in own:
                    other = (patient + 1 + rng.integers(len(subjects) - 1)) % len(subjects)
                    pool = np.flatnonzero((codes == other) & (slices.phases == phase))
                    if len(pool):
                        rows[row] = pool[np.argmin(np.abs(slices.slice_pos[pool] - slices.slice_pos[row]))]
    return SliceSet(images=slices.images[rows], labels=slices.labels[rows], subject_ids=slices.subject_ids,
                    vendors=slices.vendors, phases=slices.phases, slice_pos=pos, slice_index=slices.slice_index,
                    has_label=slices.has_label[rows], spacing_mm=slices.spacing_mm, subject_meta=slices.subject_meta)
