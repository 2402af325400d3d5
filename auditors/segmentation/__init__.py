"""The audit's own segmenter: a compact GroupNorm U-Net, its training, and Dice / HD95.

Fidelity uses it frozen (does the synthetic image show the anatomy it was conditioned on? and as
a feature space); utility trains it on real, synthetic and mixed data and compares.
"""
from .metrics import dice, hd95, slice_scores, summarise, volume_scores
from .train import Segmenter, TrainConfig, audit_train_config, real_train_segmenter, train_segmenter
from .unet import UNet, UNetConfig

__all__ = ["Segmenter", "TrainConfig", "UNet", "UNetConfig", "audit_train_config", "dice", "hd95",
           "real_train_segmenter", "slice_scores", "summarise", "train_segmenter", "volume_scores"]
