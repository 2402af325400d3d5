"""Fidelity auditors: clinical indices, mask consistency, FD/KID, PRDC, diversity, intensity, texture, discriminator."""
from . import (clinical_indices, diversity, feature_distance, intensity, mask_consistency, prdc_auditor,  # noqa: F401
               texture, discriminator, vendor_mix)  # registration
