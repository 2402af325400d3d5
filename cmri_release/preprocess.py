"""Cohort -> SliceSet (crop around the heart, resample, normalise) and back for export.

Every slice of a subject is cropped around one centre (the centroid of the ED heart labels,
so that the slices of a stack stay aligned), resampled to a fixed in-plane spacing chosen so
that `size` pixels cover `fov_mm`, and normalised per subject. What is needed to map a
synthetic slice back to scanner-like intensities and spacing is kept in `subject_meta`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .core.cohort import PHASES, Cohort, Frame, Subject
from .core.errors import InputError
from .core.sliceset import SliceSet

NORMALISATIONS = ("percentile", "zscore")


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 128  # output slices are size x size pixels
    fov_mm: float = 160.0  # field of view the crop covers; spacing = fov_mm / size
    normalisation: str = "percentile"  # percentile clip to [0, 1], or per-subject z-score
    p_low: float = 1.0
    p_high: float = 99.0
    keep_empty: bool = False  # keep annotated slices that show no heart (above base / below apex)

    def __post_init__(self):
        if self.size < 8 or self.size > 1024:
            raise ValueError(f"size must be 8-1024 px, got {self.size}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if not 0 <= self.p_low < self.p_high <= 100:
            raise ValueError("percentiles must satisfy 0 <= p_low < p_high <= 100")

    @property
    def spacing_mm(self) -> float:
        return self.fov_mm / self.size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict | None, **defaults) -> "PreprocessConfig":
        """The preprocessing a model was trained with (its `preprocess`, keys this version does not know left out),
        `defaults` filling in what it does not say."""
        known = set(cls.__dataclass_fields__)
        return cls(**{**defaults, **{k: v for k, v in (saved or {}).items() if k in known}})


def heart_centre(subject: Subject) -> np.ndarray:
    """(x, y) voxel coordinates of the heart: the centroid of the ED labels, else the image centre."""
    frame = subject.frames.get("ED") or next(iter(subject.frames.values()))
    if frame.label is not None and frame.label.any():
        xs, ys, _ = np.nonzero(frame.label)
        return np.array([xs.mean(), ys.mean()])
    # Image-only subjects: no label to find the heart; short-axis planning puts it near the centre.
    return (np.array(frame.image.shape[:2], dtype=float) - 1) / 2


def _resample_slice(plane: np.ndarray, centre, step_xy, size: int, order: int) -> np.ndarray:
    """Sample a size x size grid of `step_xy` voxels per output pixel centred on `centre`."""
    offs = (np.arange(size) - (size - 1) / 2.0)
    gx = centre[0] + offs[:, None] * step_xy[0]
    gy = centre[1] + offs[None, :] * step_xy[1]
    coords = np.stack(np.broadcast_arrays(gx, gy))
    return ndimage.map_coordinates(plane, coords, order=order, mode="constant", cval=0.0, prefilter=False)


def _on_output_grid(subject: Subject, step: np.ndarray, size: int) -> bool:
    """A volume that already is a size x size crop at the output spacing (an exported synthetic cohort, read back)
    is taken as it is: recentring it on its heart would shift it by a fraction of a pixel (a blur) and pad zeros at
    its edges, so the audit of the exported files would judge something other than what was released."""
    return tuple(subject.frames[next(iter(subject.frames))].image.shape[:2]) == (size, size) and \
        bool(np.allclose(step, 1.0, rtol=0, atol=1e-4))


def _crop_resample(subject: Subject, config: PreprocessConfig):
    """Per phase: resampled image and label stacks (Z, size, size)."""
    sx, sy, _ = subject.spacing
    step = np.array([config.spacing_mm / sx, config.spacing_mm / sy])
    if _on_output_grid(subject, step, config.size):
        return {phase: (frame.image.transpose(2, 0, 1).astype(np.float32),
                        None if frame.label is None else frame.label.transpose(2, 0, 1).astype(np.uint8))
                for phase, frame in subject.frames.items()}
    # Anti-alias before downsampling so thin structures do not alias into speckle.
    sigma = np.maximum((step - 1.0) / 2.0, 0.0)
    centre = heart_centre(subject)
    out = {}
    for phase, frame in subject.frames.items():
        imgs, labs = [], []
        for z in range(frame.image.shape[2]):
            plane = frame.image[:, :, z]
            if sigma.any():
                plane = ndimage.gaussian_filter(plane, sigma=sigma)
            imgs.append(_resample_slice(plane, centre, step, config.size, order=1))
            if frame.label is not None:
                labs.append(_resample_slice(frame.label[:, :, z], centre, step, config.size, order=0))
        out[phase] = (np.stack(imgs).astype(np.float32), np.stack(labs).astype(np.uint8) if labs else None)
    return out


def _normaliser(stacks, config: PreprocessConfig) -> dict:
    values = np.concatenate([img.ravel() for img, _ in stacks.values()])
    if config.normalisation == "percentile":
        lo, hi = np.percentile(values, [config.p_low, config.p_high])
        return {"kind": "percentile", "low": float(lo), "high": float(max(hi, lo + 1e-6))}
    return {"kind": "zscore", "mean": float(values.mean()), "std": float(max(values.std(), 1e-8))}


def normalise(image: np.ndarray, norm: dict) -> np.ndarray:
    if norm["kind"] == "percentile":
        return np.clip((image - norm["low"]) / (norm["high"] - norm["low"]), 0.0, 1.0).astype(np.float32)
    return ((image - norm["mean"]) / norm["std"]).astype(np.float32)


def denormalise(image: np.ndarray, norm: dict) -> np.ndarray:
    if norm["kind"] == "percentile":
        return (np.asarray(image, dtype=np.float32) * (norm["high"] - norm["low"]) + norm["low"]).astype(np.float32)
    return (np.asarray(image, dtype=np.float32) * norm["std"] + norm["mean"]).astype(np.float32)


def cohort_to_slices(cohort: Cohort, config: PreprocessConfig = PreprocessConfig()) -> SliceSet:
    """Preprocess every subject's ED and ES stacks into one SliceSet."""
    if len(cohort) == 0:
        raise InputError(cohort.source or "cohort", "the cohort holds no subjects")
    parts = {k: [] for k in ("images", "labels", "subject_ids", "vendors", "phases", "slice_pos", "slice_index",
                             "has_label")}
    meta = {}
    for subject in cohort:
        stacks = _crop_resample(subject, config)
        norm = _normaliser(stacks, config)
        for phase in PHASES:
            if phase not in stacks:
                continue
            images, labels = stacks[phase]
            z = np.arange(len(images))
            if labels is not None and not config.keep_empty:
                z = z[labels.reshape(len(labels), -1).any(axis=1)]
            if len(z) == 0:
                continue
            span = max(z[-1] - z[0], 1)
            parts["images"].append(normalise(images[z], norm))
            parts["labels"].append(labels[z] if labels is not None else np.zeros_like(images[z], dtype=np.uint8))
            parts["has_label"].append(np.full(len(z), labels is not None))
            parts["subject_ids"].append(np.full(len(z), subject.id))
            parts["vendors"].append(np.full(len(z), subject.vendor))
            parts["phases"].append(np.full(len(z), phase))
            parts["slice_pos"].append((z - z[0]) / span)
            parts["slice_index"].append(z)
        meta[subject.id] = {
            "vendor": subject.vendor, "centre": subject.centre, "group": subject.group,
            "thickness_mm": float(subject.spacing[2]), "n_frames": subject.n_frames,
            "frame_index": {p: f.index for p, f in subject.frames.items()}, "intensity": norm,
            "height": subject.height, "weight": subject.weight,
        }
    if not parts["images"]:
        raise InputError(cohort.source or "cohort", "no slice shows the heart")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return SliceSet(**cat, spacing_mm=config.spacing_mm, subject_meta=meta)


def slices_to_cohort(slices: SliceSet, source: str = "synthetic") -> Cohort:
    """Stack a SliceSet back into volumes (one per subject and phase) for export.

    Intensities are mapped back with each subject's `intensity` entry of `subject_meta` and the
    volume gets the SliceSet's in-plane spacing and the subject's slice thickness.
    """
    subjects = []
    for sid in slices.subjects:
        meta = slices.subject_meta.get(sid)
        if meta is None:
            raise ValueError(f"subject {sid!r} has no entry in subject_meta")
        sel = slices.subject_ids == sid
        frames = {}
        depths = {phase: np.sort(slices.slice_index[sel & (slices.phases == phase)]) for phase in PHASES}
        present = [d for d in depths.values() if len(d)]
        # A volume file holds one stack per frame, all of one depth: refuse rather than write a folder the reader
        # refuses (a real cohort preprocessed without keep_empty drops a different set of slices per phase).
        if any(len(d) != len(present[0]) or (d != present[0]).any() for d in present[1:]):
            raise ValueError(f"subject {sid!r}: its phases hold different slices ("
                             + "; ".join(f"{p} {d.tolist()}" for p, d in depths.items() if len(d))
                             + "); a volume needs the same slices at every phase: preprocess with keep_empty=True")
        for phase in PHASES:
            idx = np.flatnonzero(sel & (slices.phases == phase))
            if len(idx) == 0:
                continue
            idx = idx[np.argsort(slices.slice_index[idx], kind="stable")]
            image = denormalise(slices.images[idx], meta["intensity"]).transpose(1, 2, 0)
            label = slices.labels[idx].transpose(1, 2, 0) if slices.has_label[idx].all() else None
            frames[phase] = Frame(phase=phase, index=int(meta.get("frame_index", {}).get(phase, 1 if phase == "ED"
                                                                                           else 10)),
                                  image=image, label=label)
        affine = np.diag([slices.spacing_mm, slices.spacing_mm, float(meta["thickness_mm"]), 1.0])
        subjects.append(Subject(id=sid, frames=frames, affine=affine, vendor=meta.get("vendor", "unknown"),
                                centre=meta.get("centre", "unknown"), group=meta.get("group", "unknown"),
                                height=meta.get("height"), weight=meta.get("weight"),
                                n_frames=meta.get("n_frames")))
    return Cohort(subjects, source=source)
