"""Feature spaces the auditors compare slices in: `pixels` (Pearson correlation) and `embedding` (cosine).

Both map (N, H, W) slices to L2-normalised float32 vectors, so that an inner product is a similarity
and FAISS' exact inner-product index finds nearest neighbours. `features(ctx, space, split)` computes
each split's vectors once per audit and shares them between auditors.
"""
from __future__ import annotations

import numpy as np

from auditors.base import Option, register_options

from .embedding import EmbeddingConfig, Embedder, embedding_options, get_embedder, train_embedder
from .pixels import PixelFeatures

FEATURE_SPACES = ("pixels", "embedding")
SPLITS = ("train", "holdout", "synthetic", "test")

register_options(
    Option("feature_spaces", "str-list", FEATURE_SPACES, "feature spaces the privacy auditors compare slices in",
           choices=FEATURE_SPACES),
    Option("pixel_size", int, 32, "side of the downsampled slice the pixels space correlates", low=8, high=512),
    *embedding_options(),
)


def get_feature_space(ctx, space: str):
    """The extractor for `space`, built once per audit."""
    if space == "pixels":
        return ctx.shared("pixels", lambda: PixelFeatures(size=ctx.option("pixel_size")))
    if space == "embedding":
        return get_embedder(ctx)
    raise ValueError(f"unknown feature space {space!r}; known: {', '.join(FEATURE_SPACES)}")


def features(ctx, space: str, split: str) -> np.ndarray:
    """(N, D) float32 vectors of one split's slices in one feature space, computed once per audit."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    slices = getattr(ctx, split)
    if slices is None:
        raise ValueError(f"the audit has no {split} slices")
    return ctx.shared(f"features.{space}.{split}", lambda: get_feature_space(ctx, space).transform(slices.images))


__all__ = ["FEATURE_SPACES", "EmbeddingConfig", "Embedder", "PixelFeatures", "features", "get_embedder",
           "get_feature_space", "train_embedder"]
