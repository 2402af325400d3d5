"""Utility auditors: segmenters trained on synthetic, real and mixed data, tested on real patients."""
from . import segmentation_utility  # noqa: F401 (registration)
