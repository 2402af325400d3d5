"""Tiny cohorts for the reader/writer tests: 32x32x4 volumes, disks and rings for labels, oblique affines."""
from __future__ import annotations

import numpy as np
import pytest

from cmri_release.core.cohort import Cohort, Frame, Subject
from cmri_release.core.labels import LV, MYO, RV


def oblique_affine(spacing=(1.5, 1.4, 8.0), angles=(0.3, -0.2, 0.5), origin=(-20.0, 35.5, 12.25)) -> np.ndarray:
    """A right-handed rotated grid, as a short-axis plan gives (never axis-aligned)."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def disk_labels(shape, centre, lv_radius, rng) -> np.ndarray:
    """LV disk in a MYO ring, RV disk to its side, radius shrinking towards the apex."""
    x, y = np.mgrid[: shape[0], : shape[1]]
    label = np.zeros(shape, dtype=np.uint8)
    for z in range(shape[2]):
        r = lv_radius * (1 - 0.12 * z)
        d_lv = np.hypot(x - centre[0], y - centre[1])
        d_rv = np.hypot(x - centre[0] + 1.8 * r + 2, y - centre[1] - 1)
        label[..., z][d_rv < 0.9 * r] = RV
        label[..., z][d_lv < r + 2.5] = MYO
        label[..., z][d_lv < r] = LV
    return label


def make_subject(subject_id: str, seed: int, shape=(32, 32, 4), vendor="Siemens", labelled=True) -> Subject:
    rng = np.random.default_rng(seed)
    centre = (17 + rng.integers(-2, 3), 15 + rng.integers(-2, 3))
    frames = {}
    for phase, index, radius in (("ED", 1, 6.0), ("ES", 9, 4.0)):
        label = disk_labels(shape, centre, radius + rng.uniform(-0.5, 0.5), rng)
        intensity = np.array([60.0, 420.0, 150.0, 450.0], dtype=np.float32)[label]
        image = intensity + rng.normal(0, 12, shape).astype(np.float32)
        frames[phase] = Frame(phase=phase, index=index, image=image, label=label if labelled else None)
    return Subject(id=subject_id, frames=frames, affine=oblique_affine(origin=(-20.0 + seed, 35.5, 12.25)),
                   vendor=vendor, centre="C1", group="DCM", height=172.0, weight=70.5, n_frames=25)


@pytest.fixture
def tiny_cohort() -> Cohort:
    return Cohort([make_subject("patient001", 1), make_subject("patient002", 2, vendor="Philips")])


def assert_same_subject(a: Subject, b: Subject, image_atol=1e-5):
    assert a.id == b.id
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-5)
    for phase in ("ED", "ES"):
        np.testing.assert_allclose(a.frames[phase].image, b.frames[phase].image, atol=image_atol)
        if a.frames[phase].label is None:
            assert b.frames[phase].label is None
        else:
            np.testing.assert_array_equal(a.frames[phase].label, b.frames[phase].label)


@pytest.fixture
def subject_factory():
    return make_subject


@pytest.fixture
def same_subject():
    return assert_same_subject


@pytest.fixture
def affine() -> np.ndarray:
    return oblique_affine()
