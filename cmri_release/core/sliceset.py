"""`SliceSet`: the one in-memory form every generator and auditor works on.

N preprocessed 2D short-axis slices of one size (H = W), their ACDC label maps, and per slice the
subject id, vendor, phase, slice position and whether the slice is annotated. Per-subject
metadata (group, slice thickness, intensity scale) rides along in `subject_meta` so that a
SliceSet can be turned back into a `Cohort` for export.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .labels import check_labels


@dataclass
class SliceSet:
    images: np.ndarray  # float32 (N, H, W), normalised (see PreprocessConfig)
    labels: np.ndarray  # uint8 (N, H, W); zeros where has_label is False
    subject_ids: np.ndarray  # str (N,)
    vendors: np.ndarray  # str (N,)
    phases: np.ndarray  # str (N,) "ED" / "ES"
    slice_pos: np.ndarray  # float32 (N,) 0 = base ... 1 = apex
    slice_index: np.ndarray  # int32 (N,) index of the slice in its volume (base = 0)
    has_label: np.ndarray  # bool (N,)
    spacing_mm: float  # in-plane spacing after resampling
    subject_meta: dict = field(default_factory=dict)  # subject id -> {"group", "centre", "thickness_mm", ...}

    def __post_init__(self):
        self.images = np.ascontiguousarray(self.images, dtype=np.float32)
        if self.images.ndim != 3 or self.images.shape[1] != self.images.shape[2]:
            raise ValueError(f"images must be (N, H, H), got {self.images.shape}")
        self.labels = check_labels(self.labels, "SliceSet labels")
        if self.labels.shape != self.images.shape:
            raise ValueError(f"labels {self.labels.shape} and images {self.images.shape} differ in shape")
        n = len(self.images)
        self.subject_ids = np.asarray(self.subject_ids, dtype=str)
        self.vendors = np.asarray(self.vendors, dtype=str)
        self.phases = np.asarray(self.phases, dtype=str)
        self.slice_pos = np.asarray(self.slice_pos, dtype=np.float32)
        self.slice_index = np.asarray(self.slice_index, dtype=np.int32)
        self.has_label = np.asarray(self.has_label, dtype=bool)
        for name in ("subject_ids", "vendors", "phases", "slice_pos", "slice_index", "has_label"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def subjects(self) -> list[str]:
        """Subject ids in order of first appearance."""
        _, first = np.unique(self.subject_ids, return_index=True)
        return [str(self.subject_ids[i]) for i in sorted(first)]

    @property
    def vendor_names(self) -> list[str]:
        return sorted(set(self.vendors.tolist()))

    def subject_vendor(self) -> dict[str, str]:
        """Subject id -> vendor."""
        return {str(s): str(v) for s, v in zip(self.subject_ids, self.vendors)}

    def subject_codes(self) -> tuple[np.ndarray, list[str]]:
        """Per-slice integer code of its subject, and the subject list the codes index."""
        subjects = self.subjects
        lookup = {s: i for i, s in enumerate(subjects)}
        return np.array([lookup[s] for s in self.subject_ids], dtype=np.int64), subjects

    def select(self, index) -> "SliceSet":
        """A new SliceSet of the slices picked by a boolean mask or an integer index."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        keep = set(self.subject_ids[idx].tolist())
        return SliceSet(
            images=self.images[idx], labels=self.labels[idx], subject_ids=self.subject_ids[idx],
            vendors=self.vendors[idx], phases=self.phases[idx], slice_pos=self.slice_pos[idx],
            slice_index=self.slice_index[idx], has_label=self.has_label[idx], spacing_mm=self.spacing_mm,
            subject_meta={k: v for k, v in self.subject_meta.items() if k in keep},
        )

    def for_subjects(self, ids) -> "SliceSet":
        """The slices of the given subjects (the unit of every split)."""
        return self.select(np.isin(self.subject_ids, list(ids)))

    def labelled(self) -> "SliceSet":
        return self.select(self.has_label)

    @staticmethod
    def concat(parts: list["SliceSet"]) -> "SliceSet":
        if not parts:
            raise ValueError("nothing to concatenate")
        spacing = {p.spacing_mm for p in parts}
        if len(spacing) != 1 or len({p.size for p in parts}) != 1:
            raise ValueError("slice sets differ in size or spacing")
        meta = {}
        for p in parts:
            meta.update(p.subject_meta)
        return SliceSet(
            images=np.concatenate([p.images for p in parts]), labels=np.concatenate([p.labels for p in parts]),
            subject_ids=np.concatenate([p.subject_ids for p in parts]),
            vendors=np.concatenate([p.vendors for p in parts]), phases=np.concatenate([p.phases for p in parts]),
            slice_pos=np.concatenate([p.slice_pos for p in parts]),
            slice_index=np.concatenate([p.slice_index for p in parts]),
            has_label=np.concatenate([p.has_label for p in parts]), spacing_mm=parts[0].spacing_mm,
            subject_meta=meta,
        )
