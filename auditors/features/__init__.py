"""Feature spaces the auditors compare slices in, from one registry (`spaces.FEATURE_SPACES`): `pixels` (Pearson
correlation) and `embedding` (cosine) for privacy, `embedding` and `segmenter` for fidelity.

`features(ctx, space, split)` computes each split's vectors once per audit and shares them between auditors.
"""
from __future__ import annotations

import numpy as np

from auditors.base import Option, register_options

from . import builtin  # noqa: F401 - registers the built-in spaces
from .embedding import EmbeddingConfig, Embedder, get_embedder, train_embedder
from .pixels import PixelFeatures
from .spaces import FEATURE_SPACES, FeatureSpace, get_feature_space, register_feature_space, spaces_for

SPLITS = ("train", "holdout", "synthetic", "test")
PRIVACY_SPACES = spaces_for("privacy")

register_options(
    Option("feature_spaces", "str-list", PRIVACY_SPACES, "feature spaces the privacy auditors compare slices in",
           choices=PRIVACY_SPACES),
)


def features(ctx, space: str, split: str) -> np.ndarray:
    """(N, D) float32 vectors of one split's slices in one feature space, computed once per audit."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    slices = getattr(ctx, split)
    if slices is None:
        raise ValueError(f"the audit has no {split} slices")
    return ctx.shared(f"features.{space}.{split}", lambda: get_feature_space(ctx, space).transform(slices.images))


__all__ = ["FEATURE_SPACES", "PRIVACY_SPACES", "EmbeddingConfig", "Embedder", "FeatureSpace", "PixelFeatures",
           "features", "get_embedder", "get_feature_space", "register_feature_space", "spaces_for",
           "train_embedder"]
