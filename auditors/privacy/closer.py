"""Closer to train than to holdout, over the WHOLE training set.

For each synthetic patient: is its median slice closer (in a feature space) to the training patients than
to the holdout patients? An honest generator samples the population, so the answer is yes half the time.
A nearest neighbour among more patients is closer by chance alone, so the larger set is compared in
balanced subsamples of the smaller one's size, many of them (`closer_subsamples`): every training
patient takes part, and a copy of any of them counts (a single subsample hid the others' copies). A
patient's score is the share of subsamples in which it sits closer to train (ties count one half); the
cohort's share is the mean score. Similarities to every patient are computed once (per-patient maxima
of a matrix product), so each subsample costs a max over columns, not a search.
"""
from __future__ import annotations

import numpy as np
import torch

from .patients import per_patient


def patient_max_similarity(queries: np.ndarray, reference: np.ndarray, reference_codes: np.ndarray, n_reference: int,
                           chunk: int = 2048) -> np.ndarray:
    """(Q, n_reference): each query's best inner product with any slice of each reference patient."""
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    codes = torch.from_numpy(np.asarray(reference_codes, dtype=np.int64))
    out = np.empty((len(queries), n_reference), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(queries), chunk):
            sims = torch.from_numpy(np.ascontiguousarray(queries[start:start + chunk], dtype=np.float32)) @ ref.T
            best = torch.full((len(sims), n_reference), -np.inf)
            best.scatter_reduce_(1, codes.expand(len(sims), -1), sims, reduce="amax")
            out[start:start + len(sims)] = best.numpy()
    return out


def closer_scores(to_train: np.ndarray, to_holdout: np.ndarray, query_codes: np.ndarray, n_queries: int,
                  subsamples: int, seed: int) -> tuple[np.ndarray, str]:
    """Per query patient, the share of balanced subsamples in which its median slice is closer to train.

    `to_train` (Q, n_train) and `to_holdout` (Q, n_holdout) are per-patient best similarities of each slice."""
    n_t, n_h = to_train.shape[1], to_holdout.shape[1]
    keep = min(n_t, n_h)
    rng = np.random.default_rng(seed)
    draws = 1 if n_t == n_h else int(subsamples)
    score = np.zeros(n_queries)
    for _ in range(draws):
        t = to_train if n_t == keep else to_train[:, rng.choice(n_t, keep, replace=False)]
        h = to_holdout if n_h == keep else to_holdout[:, rng.choice(n_h, keep, replace=False)]
        diff = per_patient(t.max(axis=1).astype(np.float64) - h.max(axis=1), query_codes, n_queries, "median")
        score += (diff > 0) + 0.5 * (diff == 0)
    how = ("none (train and holdout have the same number of patients)" if n_t == n_h else
           f"{draws} balanced subsamples of {keep} of the {max(n_t, n_h)} {'train' if n_t > n_h else 'holdout'} "
           f"patients")
    return score / draws, how
