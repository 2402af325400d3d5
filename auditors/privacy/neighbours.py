"""Nearest neighbours through FAISS: a thin layer that streams queries in batches.

Exact search is FAISS' flat index: `IndexFlatIP` on L2-normalised vectors (inner product = cosine or
Pearson similarity, the feature spaces' convention) or `IndexFlatL2` (squared Euclidean distances, as
FAISS returns them). For very large reference sets an IVF index trades exactness for speed
(`ivf_lists > 0`). Queries go to FAISS in batches written straight into preallocated result arrays,
so temporary memory is bounded by the batch, whatever the size of the synthetic set; FAISS itself
loops over queries in BLAS blocks, so there is no Python loop over slices.
"""
from __future__ import annotations

import faiss
import numpy as np

from auditors.base import Option, register_options

register_options(
    Option("nn_ivf_lists", int, 0, "inverted lists of an approximate FAISS index (0: exact search)", low=0),
    Option("nn_nprobe", int, 16, "lists an approximate search visits", low=1),
    Option("nn_batch_size", int, 16384, "queries searched at once (bounds memory)", low=1),
)

METRICS = ("ip", "l2")


def _as_float32(vectors: np.ndarray, what: str) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty (N, D) array, got shape {vectors.shape}")
    return vectors


class NeighbourIndex:
    """A FAISS index over `vectors` (N, D); `search` returns (scores, ids), best first, like FAISS."""

    def __init__(self, vectors: np.ndarray, metric: str = "ip", ivf_lists: int = 0, nprobe: int = 16,
                 batch_size: int = 16384, seed: int = 0):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        vectors = _as_float32(vectors, "index vectors")
        self.metric, self.dim, self.ntotal = metric, vectors.shape[1], vectors.shape[0]
        self.batch_size = int(batch_size)
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        flat = faiss.IndexFlatIP(self.dim) if metric == "ip" else faiss.IndexFlatL2(self.dim)
        if ivf_lists and ivf_lists > 0:
            # IVF needs ~39 training points per list; fewer lists than that would only cost accuracy.
            nlist = int(max(1, min(ivf_lists, self.ntotal // 39)))
            self.index = faiss.IndexIVFFlat(flat, self.dim, nlist, faiss_metric)
            self.index.cp.seed = seed
            self.index.train(vectors)
            self.index.nprobe = int(min(nprobe, nlist))
            self._quantizer = flat  # the IVF index holds a pointer to it: keep it alive
            self.exact = nlist == 1 or self.index.nprobe >= nlist
        else:
            self.index = flat
            self.exact = True
        self.index.add(vectors)

    def describe(self) -> dict:
        kind = type(self.index).__name__
        extra = {"nlist": int(self.index.nlist), "nprobe": int(self.index.nprobe)} if not isinstance(
            self.index, faiss.IndexFlat) else {}
        return {"index": kind, "metric": self.metric, "exact": self.exact, "n": self.ntotal, "dim": self.dim, **extra}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k): similarities (ip, descending) or squared distances (l2, ascending)."""
        queries = _as_float32(queries, "queries")
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have {queries.shape[1]} dimensions, the index {self.dim}")
        k = int(min(k, self.ntotal))
        if k < 1:
            raise ValueError("k must be at least 1")
        scores = np.empty((len(queries), k), dtype=np.float32)
        ids = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), self.batch_size):
            stop = min(start + self.batch_size, len(queries))
            self.index.search(queries[start:stop], k, D=scores[start:stop], I=ids[start:stop])
        return scores, ids

    def count_within(self, queries: np.ndarray, threshold: float) -> np.ndarray:
        """Per query, how many indexed vectors are within `threshold`.

        ip: similarity > threshold; l2: squared distance < threshold (FAISS' range-search convention).
        Only the counts are kept, batch by batch, so memory does not grow with the result lists.
        """
        queries = _as_float32(queries, "queries")
        counts = np.empty(len(queries), dtype=np.int64)
        for start in range(0, len(queries), self.batch_size):
            stop = min(start + self.batch_size, len(queries))
            lims, _, _ = self.index.range_search(queries[start:stop], float(threshold))
            counts[start:stop] = np.diff(lims)
        return counts


def cosine_distance_to_euclidean(similarity: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their inner product: sqrt(2 - 2 s)."""
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(similarity, dtype=np.float64), 0.0, None))


def euclidean_to_similarity(distance: float) -> float:
    """Inverse of `cosine_distance_to_euclidean`: the inner product of unit vectors `distance` apart."""
    return 1.0 - 0.5 * float(distance) ** 2


def index_for(ctx, space: str, split: str, subset: np.ndarray | None = None, key: str = "") -> NeighbourIndex:
    """The audit's inner-product index over one split's vectors in one feature space, built once per audit.

    `subset` (slice indices, with a distinct `key`) indexes only part of the split. Options:
    `nn_ivf_lists` (0: exact, the default), `nn_nprobe`, `nn_batch_size`.
    """
    from auditors.features import features  # late: features import torch, neighbours need not

    def build():
        vectors = features(ctx, space, split)
        if subset is not None:
            vectors = vectors[subset]
        return NeighbourIndex(vectors, metric="ip", ivf_lists=ctx.option("nn_ivf_lists"),
                              nprobe=ctx.option("nn_nprobe"), batch_size=ctx.option("nn_batch_size"), seed=ctx.seed)

    return ctx.shared(f"index.{space}.{split}{'.' + key if key else ''}", build)
