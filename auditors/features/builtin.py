"""The built-in feature spaces: raw pixels, the self-supervised embedding, and the real-train segmenter's encoder."""
from __future__ import annotations

from auditors.base import Option, register_options

from .embedding import embedding_options, get_embedder
from .pixels import PixelFeatures
from .spaces import FeatureSpace, register_feature_space


class SegmenterFeatures:
    """Pooled encoder features of the U-Net trained on real train: what matters for anatomy and contrast."""

    def __init__(self, ctx):
        from auditors.segmentation.train import real_train_segmenter  # late: only fidelity trains it

        self.segmenter = real_train_segmenter(ctx)

    def transform(self, images):
        return self.segmenter.features(images)


register_options(
    Option("pixel_size", int, 32, "side of the downsampled slice the pixels space correlates", low=8, high=512),
    *embedding_options(),
)
register_feature_space(FeatureSpace(
    "pixels", lambda ctx: PixelFeatures(size=ctx.option("pixel_size")),
    "downsampled slices, mean-centred and L2-normalised (an inner product is Pearson's correlation)", ("privacy",)))
# The embedding is cached under its own key ("embedding"), where get_embedder has always put it.
register_feature_space(FeatureSpace(
    "embedding", get_embedder, "a self-supervised embedding trained on real train (cosine similarity)",
    ("privacy", "fidelity")))
register_feature_space(FeatureSpace(
    "segmenter", SegmenterFeatures, "pooled encoder features of the segmenter trained on real train",
    ("fidelity",)))
