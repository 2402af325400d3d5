"""Fixtures of the reliability suite: one tiny trained model shared by the whole session."""
from __future__ import annotations

from pathlib import Path

import pytest

from reliability_cli import TINY_TRAIN, invoke
from reliability_data import write_ring_cohort


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A flow model trained for one epoch on four ring patients at 16 px (a few seconds)."""
    root = tmp_path_factory.mktemp("tiny_model")
    data = write_ring_cohort(root / "train", 4)
    ran = invoke("train", data, "--out", root / "model", *TINY_TRAIN)
    assert ran.exit_code == 0, ran.stderr
    return root / "model"
