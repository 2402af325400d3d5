"""Dice and HD95 per structure (RV, MYO, LV), per slice and per volume: plain functions.

Conventions for empty structures (a structure absent from a slice is common: the RV ends above
the apex, basal slices may miss the LV ring):

- Dice: both prediction and reference empty -> NaN ("undefined"; left out of every mean, so a
  segmenter is neither rewarded nor punished for agreeing that nothing is there); exactly one
  empty -> 0.
- HD95: both empty -> NaN; exactly one empty -> the diagonal of the field of view in mm, the
  largest distance the image can hold (the BraTS convention of a finite worst case, so that
  means stay finite and a missed structure still counts against the segmenter).

HD95 follows MedPy's `hd95`: the 95th percentile of the pooled distances from each surface voxel
of one mask to the nearest surface voxel of the other, both directions, in mm. A surface voxel is
a mask voxel removed by one binary erosion with the face-connected structuring element.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy import ndimage

from cmri_release.core.labels import STRUCTURES

STRUCTURE_LABELS = {name: k for k, name in enumerate(STRUCTURES, start=1)}  # RV 1, MYO 2, LV 3


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean masks of any shape (NaN when both are empty)."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    total = int(pred.sum()) + int(target.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, target).sum()) / total


def dice_batch(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, ...) boolean masks -> (N,) Dice per item, with the same empty conventions as `dice`."""
    pred = np.asarray(pred, bool).reshape(len(pred), -1)
    target = np.asarray(target, bool).reshape(len(target), -1)
    inter = np.logical_and(pred, target).sum(axis=1).astype(np.float64)
    total = pred.sum(axis=1).astype(np.float64) + target.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * inter / np.maximum(total, 1), np.nan)


def surface(mask: np.ndarray) -> np.ndarray:
    """The voxels of `mask` that one face-connected erosion removes (outside the image counts as empty)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1, border_value=0)


def field_of_view_diagonal(shape, spacing) -> float:
    """The largest distance in mm between two voxels of an image of this shape."""
    return float(np.linalg.norm((np.asarray(shape) - 1) * np.asarray(spacing, dtype=float)))


BRUTE_FORCE_PAIRS = 40_000  # surface point pairs up to which hausdorff compares every pair (cheaper than 2 EDTs)


def hausdorff(pred: np.ndarray, target: np.ndarray, spacing, percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance in mm between two boolean masks (HD95 by default)."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if pred.shape != target.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {target.shape}")
    spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (pred.ndim,))
    has_p, has_t = pred.any(), target.any()
    if not has_p and not has_t:
        return float("nan")
    if has_p != has_t:
        return field_of_view_diagonal(pred.shape, spacing)
    sp, st = surface(pred), surface(target)
    a, b = np.argwhere(sp), np.argwhere(st)
    if len(a) * len(b) <= BRUTE_FORCE_PAIRS:
        # Small surfaces (a slice's contours): every pair's distance, the nearest kept; the values the distance
        # transform below gives ((a - b) * spacing, squared, summed over axes, square root), without two transforms.
        d2 = np.square((a[:, None, :] - b[None, :, :]) * spacing).sum(axis=-1)
        to_t, to_p = np.sqrt(d2.min(axis=1)), np.sqrt(d2.min(axis=0))
    else:
        # Distance from every voxel to the other mask's surface, read off at this mask's surface.
        to_t = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
        to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    return float(np.percentile(np.concatenate([to_t, to_p]), percentile))


def hd95(pred: np.ndarray, target: np.ndarray, spacing) -> float:
    return hausdorff(pred, target, spacing, 95.0)


def slice_scores(pred: np.ndarray, target: np.ndarray, spacing_mm: float, with_hd95: bool = True) -> dict:
    """Per-slice scores of (N, H, W) label maps: {"dice": {structure: (N,)}, "hd95": {structure: (N,)}}."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"expected two (N, H, W) label maps of one shape, got {pred.shape} and {target.shape}")
    out = {"dice": {}, "hd95": {}}
    for name, k in STRUCTURE_LABELS.items():
        p, t = pred == k, target == k
        out["dice"][name] = dice_batch(p, t)
        if with_hd95:
            out["hd95"][name] = np.array([hd95(p[i], t[i], spacing_mm) for i in range(len(p))])
    return out


def volume_scores(pred: np.ndarray, target: np.ndarray, volume_ids, slice_index, spacing_mm: float,
                  thickness_mm, with_hd95: bool = True) -> dict:
    """Per-volume scores: the slices sharing a volume id (subject + phase) are stacked by slice index.

    `thickness_mm` is one number or a mapping volume id -> slice thickness (the through-plane
    spacing of HD95). Returns {"volumes": [ids], "dice": {structure: (V,)}, "hd95": {structure: (V,)}}.
    """
    volume_ids = np.asarray(volume_ids)
    slice_index = np.asarray(slice_index)
    order = sorted(set(volume_ids.tolist()))
    out = {"volumes": order, "dice": defaultdict(list), "hd95": defaultdict(list)}
    for vid in order:
        idx = np.flatnonzero(volume_ids == vid)
        idx = idx[np.argsort(slice_index[idx], kind="stable")]
        thick = thickness_mm[vid] if isinstance(thickness_mm, dict) else thickness_mm
        spacing = (float(thick), spacing_mm, spacing_mm)
        for name, k in STRUCTURE_LABELS.items():
            p, t = pred[idx] == k, target[idx] == k
            out["dice"][name].append(dice(p, t))
            if with_hd95:
                out["hd95"][name].append(hd95(p, t, spacing))
    out["dice"] = {k: np.array(v) for k, v in out["dice"].items()}
    out["hd95"] = {k: np.array(v) for k, v in out["hd95"].items()}
    return out


def nanmean(values) -> float:
    """Mean over the defined values; NaN when none is defined (never a silent 0 or 1)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def summarise(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """{structure: per-item scores} -> {structure: mean, "mean": mean over the structures}."""
    out = {name: nanmean(v) for name, v in scores.items()}
    out["mean"] = nanmean(list(out.values()))
    return out
