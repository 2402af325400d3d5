"""Fidelity auditors: clinical indices, mask consistency, FD/KID, PRDC, diversity, duplicates, intensity, texture,
discriminator, vendor mix, base-to-apex stack profiles."""
from . import (clinical_indices, discriminator, diversity, duplicates, feature_distance, intensity,  # noqa: F401
               mask_consistency, prdc_auditor, stacks, texture, vendor_mix)  # registration
