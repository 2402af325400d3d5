"""The cohort model: subjects with metadata and their ED/ES image and label volumes.

Every reader produces a `Cohort`; every writer consumes one. Volumes are stored as numpy
arrays in voxel order (x, y, z) as nibabel gives them, z running from base to apex, with the
voxel-to-world `affine` of the file. Nothing here imports the CLI, torch or any reader, so that
`generators` and `auditors` can depend on data alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .labels import check_labels

PHASES = ("ED", "ES")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_subject_id(subject_id: str, source) -> str:
    """Refuse ids that could escape a folder or confuse a file system (path separators, '..')."""
    if not isinstance(subject_id, str) or not _SAFE_ID.match(subject_id) or ".." in subject_id:
        raise InputError(source, f"unsafe subject id {subject_id!r} (allowed: letters, digits, '.', '_', '-'; no '..')")
    return subject_id


@dataclass
class Frame:
    """One cardiac phase of one subject: a short-axis volume and, when annotated, its labels."""

    phase: str  # "ED" or "ES"
    index: int  # 1-based frame number in the cine, as ACDC's Info.cfg counts
    image: np.ndarray  # float32 (X, Y, Z)
    label: np.ndarray | None = None  # uint8 (X, Y, Z), ACDC label map, or None when not annotated

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, not {self.phase!r}")
        self.image = np.asarray(self.image, dtype=np.float32)
        if self.image.ndim != 3:
            raise ValueError(f"a frame's image must be 3D (X, Y, Z), got shape {self.image.shape}")
        if self.label is not None:
            self.label = check_labels(self.label, f"{self.phase} label")
            if self.label.shape != self.image.shape:
                raise ValueError(f"label shape {self.label.shape} differs from image shape {self.image.shape}")


@dataclass
class Subject:
    """A patient (or a synthetic patient) and its frames."""

    id: str
    frames: dict[str, Frame]
    affine: np.ndarray  # 4x4 voxel-to-world (mm), shared by the frames
    vendor: str = "unknown"
    centre: str = "unknown"
    group: str = "unknown"  # ACDC group: NOR, DCM, HCM, MINF, ARV
    height: float | None = None  # cm
    weight: float | None = None  # kg
    n_frames: int | None = None  # frames in the cine
    extra: dict = field(default_factory=dict)  # anything a reader wants to keep (never identifiers)

    def __post_init__(self):
        check_subject_id(self.id, "subject")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along x, y, z (the column norms of the affine)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def has_labels(self) -> bool:
        return all(f.label is not None for f in self.frames.values())

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.frames.values())).image.shape


@dataclass
class Cohort:
    """An ordered list of subjects with unique ids."""

    subjects: list[Subject]
    source: str = ""

    def __post_init__(self):
        seen = set()
        for s in self.subjects:
            if s.id in seen:
                raise InputError(self.source or "cohort", f"duplicate subject id {s.id!r}")
            seen.add(s.id)

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self):
        return iter(self.subjects)

    def __getitem__(self, subject_id: str) -> Subject:
        for s in self.subjects:
            if s.id == subject_id:
                return s
        raise KeyError(subject_id)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.subjects]

    @property
    def vendors(self) -> list[str]:
        return sorted({s.vendor for s in self.subjects})

    def subset(self, ids) -> "Cohort":
        wanted = set(ids)
        return Cohort([s for s in self.subjects if s.id in wanted], source=self.source)
