"""Shared fixtures: tiny synthetic data built in memory (no downloads, no phantom needed)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from cmri_release.core.cohort import Cohort, Frame, Subject


def pytest_collection_modifyitems(config, items):
    # CUDA tests run where a CUDA device is; elsewhere they are skipped, whatever else is selected.
    if not _cuda_available():
        skip_cuda = pytest.mark.skip(reason="cuda: no CUDA device here")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip_cuda)
    # Heavy tests (100-patient calibrations, tens of minutes on 2 cores) run only when RUN_HEAVY=1.
    if os.environ.get("RUN_HEAVY") != "1" and not config.getoption("-m"):
        skip_heavy = pytest.mark.skip(reason="heavy: set RUN_HEAVY=1 (100-patient calibration runs)")
        for item in items:
            if "heavy" in item.keywords:
                item.add_marker(skip_heavy)
    # Slow tests run in CI (CI=true) and when RUN_SLOW=1; locally they are skipped by default.
    if os.environ.get("RUN_SLOW") == "1" or os.environ.get("CI") == "true" or config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="slow: set RUN_SLOW=1 (CI runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def ring_subject(subject_id: str, vendor: str = "A", shape=(96, 80, 6), spacing=(1.5, 1.5, 8.0), seed: int = 0,
                 offset=(0, 0)) -> Subject:
    """A subject with concentric LV cavity / myocardium and an RV blob, shrinking towards the apex."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    cx, cy = shape[0] / 2 + offset[0], shape[1] / 2 + offset[1]
    frames = {}
    for phase, index, scale in (("ED", 1, 1.0), ("ES", 10, 0.75)):
        image = np.zeros(shape, np.float32)
        label = np.zeros(shape, np.uint8)
        for z in range(shape[2]):
            r = (12 - z) * scale
            d = np.hypot(x - cx, y - cy)
            rv = np.hypot(x - cx, y - (cy - 1.8 * r)) < r * 0.8
            label[..., z][rv] = 1
            label[..., z][d < r + 4] = 2
            label[..., z][d < r] = 3
        image[label == 3] = 300
        image[label == 1] = 280
        image[label == 2] = 90
        image[label == 0] = 40
        image += rng.normal(0, 10, shape).astype(np.float32)
        frames[phase] = Frame(phase, index, image, label)
    affine = np.diag([*spacing, 1.0])
    return Subject(id=subject_id, frames=frames, affine=affine, vendor=vendor, centre="C1", group="NOR",
                   height=175.0, weight=70.0, n_frames=25)


@pytest.fixture
def tiny_cohort() -> Cohort:
    return Cohort([ring_subject(f"s{i:02d}", vendor="AB"[i % 2], seed=i, offset=(i, -i)) for i in range(6)],
                  source="tiny")
