"""The one label map of the project (ACDC's), and the conversions into it.

Every label array that enters the project is checked here: a value outside 0-3 is an error,
never a silent cast. M&Ms and M&Ms-2 use the reverse order for the ventricles and are mapped on
reading.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError

BACKGROUND, RV, MYO, LV = 0, 1, 2, 3
LABEL_NAMES = {BACKGROUND: "background", RV: "RV", MYO: "MYO", LV: "LV"}
STRUCTURES = ("RV", "MYO", "LV")  # in label order 1, 2, 3
NUM_CLASSES = 4

# M&Ms / M&Ms-2: 1 LV, 2 MYO, 3 RV  ->  ACDC: 1 RV, 2 MYO, 3 LV
MNMS_TO_ACDC = np.array([BACKGROUND, LV, MYO, RV], dtype=np.uint8)


def check_labels(label: np.ndarray, source) -> np.ndarray:
    """Return `label` as uint8 after checking it holds only whole numbers 0-3."""
    arr = np.asarray(label)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InputError(source, "label map holds NaN or inf")
        if not np.array_equal(arr, np.round(arr)):
            raise InputError(source, "label map holds non-integer values")
    found = np.unique(arr)
    bad = [v for v in found.tolist() if v not in LABEL_NAMES]
    if bad:
        raise InputError(source, f"unexpected label values {bad[:5]} (allowed: 0 background, 1 RV, 2 MYO, 3 LV)")
    return arr.astype(np.uint8, copy=False)


def mnms_to_acdc(label: np.ndarray, source) -> np.ndarray:
    """Map an M&Ms label map (1 LV, 2 MYO, 3 RV) to ACDC's order (1 RV, 2 MYO, 3 LV)."""
    return MNMS_TO_ACDC[check_labels(label, source)]


def acdc_to_mnms(label: np.ndarray, source) -> np.ndarray:
    """The inverse of `mnms_to_acdc` (the map is its own inverse)."""
    return MNMS_TO_ACDC[check_labels(label, source)]


def one_hot(label: np.ndarray) -> np.ndarray:
    """(..., H, W) uint8 -> (..., 4, H, W) float32."""
    lab = np.asarray(label)
    out = np.zeros(lab.shape[:-2] + (NUM_CLASSES,) + lab.shape[-2:], dtype=np.float32)
    for k in range(NUM_CLASSES):
        out[..., k, :, :] = lab == k
    return out
