"""Fidelity auditors: cardiac clinical indices, mask consistency, FD/KID, PRDC, diversity, intensity statistics."""
from . import clinical_indices, diversity, feature_distance, intensity, mask_consistency, prdc_auditor  # noqa: F401 (registration)
