"""Per-patient aggregation of per-slice values: the patient, never the slice, is the unit of privacy."""
from __future__ import annotations

import numpy as np

AGGREGATES = ("mean", "max", "median")


def per_patient(values: np.ndarray, codes: np.ndarray, n_patients: int, how: str = "mean") -> np.ndarray:
    """Aggregate slice values into one value per patient code 0..n_patients-1 (vectorised, no loop over slices)."""
    values = np.asarray(values, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    if values.shape != codes.shape:
        raise ValueError(f"values {values.shape} and patient codes {codes.shape} differ in shape")
    counts = np.bincount(codes, minlength=n_patients)
    if (counts == 0).any():
        raise ValueError("every patient needs at least one slice")
    if how == "mean":
        return np.bincount(codes, weights=values, minlength=n_patients) / counts
    if how == "max":
        out = np.full(n_patients, -np.inf)
        np.maximum.at(out, codes, values)
        return out
    if how == "median":
        order = np.lexsort((values, codes))  # by patient, then by value
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sorted_values = values[order]
        low = sorted_values[starts + (counts - 1) // 2]
        high = sorted_values[starts + counts // 2]
        return (low + high) / 2
    raise ValueError(f"unknown aggregate {how!r}; known: {AGGREGATES}")


def max_slices_per_patient(codes: np.ndarray) -> int:
    return int(np.bincount(np.asarray(codes, dtype=np.int64)).max())


def first_other_patient(ids: np.ndarray, codes_of_index: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Per query row of neighbour `ids` (best first), the column of the first neighbour whose patient differs from
    `excluded[row]`; -1 when every listed neighbour belongs to the excluded patient."""
    patients = codes_of_index[ids]
    ok = patients != np.asarray(excluded)[:, None]
    col = np.argmax(ok, axis=1)
    return np.where(ok.any(axis=1), col, -1)
