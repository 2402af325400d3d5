"""The feature spaces fidelity compares slices in, computed once per audit and shared.

- `segmenter`: pooled encoder features of the U-Net trained on real train (always available);
  it sees what matters for anatomy and contrast.
- `embedding`: the self-supervised embedding trained on real train (auditors.features), built for
  near-copy search and shared with the privacy auditors (trained once per audit).

Features are standardised with the train split's per-dimension mean and spread, so that
Euclidean distances (PRDC, diversity) weigh every dimension alike and read in train-spread units.
"""
from __future__ import annotations

import numpy as np

from auditors.features import features as shared_features
from auditors.segmentation.train import real_train_segmenter

SPLITS = ("train", "holdout", "synthetic")
SPACES = ("segmenter", "embedding")


def available_spaces() -> list[str]:
    return list(SPACES)


def _raw(ctx, space: str, split: str) -> np.ndarray:
    slices = getattr(ctx, split)
    if space == "segmenter":
        return ctx.shared(f"features.segmenter.{split}",
                          lambda: real_train_segmenter(ctx).features(slices.images))
    if space == "embedding":  # computed once, in the cache the privacy auditors use too
        return shared_features(ctx, "embedding", split)
    raise ValueError(f"unknown fidelity feature space {space!r}; known: segmenter, embedding")


def standardised(ctx, space: str) -> dict[str, np.ndarray]:
    """{split: (N, D) float64} for train, holdout and synthetic, z-scored with the train statistics."""
    def build():
        raw = {split: np.asarray(_raw(ctx, space, split), dtype=np.float64) for split in SPLITS}
        mean = raw["train"].mean(axis=0)
        spread = raw["train"].std(axis=0)
        spread = np.where(spread > 1e-8 * max(spread.max(), 1e-12), spread, 1.0)  # constant dims stay put
        return {split: (x - mean) / spread for split, x in raw.items()}
    return ctx.shared(f"fidelity.standardised.{space}", build)


def matched_indices(ctx) -> dict[str, np.ndarray]:
    """Equal-size samples of holdout and synthetic slices, drawn by whole subjects (seeded, shared).

    Set-level statistics (FD, PRDC, diversity) depend on the sample size; comparing synthetic and
    holdout against train at the same size makes the holdout a fair real-vs-real baseline.
    """
    from .distances import matched_sample, subject_groups

    def build():
        rng = np.random.default_rng([ctx.seed, 6])
        n = min(len(ctx.holdout), len(ctx.synthetic))
        return {split: np.sort(matched_sample(subject_groups(getattr(ctx, split).subject_ids), n, rng, replace=False))
                for split in ("holdout", "synthetic")}
    return ctx.shared("fidelity.matched", build)
