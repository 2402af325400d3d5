"""Fixtures for the generator tests; the data builder is in generator_toys.py (importable by name)."""
from __future__ import annotations

import pytest
from generator_toys import toy_slices

from cmri_release.core.sliceset import SliceSet


@pytest.fixture(scope="session")
def toy_train() -> SliceSet:
    return toy_slices(n_subjects=6, size=16, seed=0)


@pytest.fixture(scope="session")
def toy_population() -> SliceSet:
    """A larger population for the mask generator's statistics."""
    return toy_slices(n_subjects=40, size=32, seed=1)
