"""Fidelity auditors: mask consistency, FD/KID, PRDC, diversity, intensity statistics."""
from . import diversity, feature_distance, intensity, mask_consistency, prdc_auditor, texture, discriminator  # noqa: F401 (registration)
