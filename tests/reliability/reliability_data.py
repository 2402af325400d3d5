"""Tiny cohorts for the reliability suite, and the ways to break them.

Subjects are concentric rings (LV cavity, myocardium) with an RV crescent on a 40 x 40 x 4 grid of
4 x 4 x 8 mm voxels, so a 160 mm field of view holds the whole heart and every step of the tool runs
in seconds. Each `break_*` helper damages one thing on disk, the way a real file goes bad.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from cmri_release.core.cohort import Cohort, Frame, Subject
from cmri_release.io import write_cohort
from mnms_writer import write_mnms

SHAPE = (40, 40, 4)
SPACING = (4.0, 4.0, 8.0)


def ring_subject(subject_id: str, vendor: str = "Siemens", seed: int = 0, *, centre: str = "C1",
                 group: str = "NOR", shape=SHAPE, spacing=SPACING) -> Subject:
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    cx, cy = shape[0] / 2 + rng.uniform(-2, 2), shape[1] / 2 + rng.uniform(-2, 2)
    frames = {}
    for phase, index, scale in (("ED", 1, 1.0), ("ES", 9, 0.7)):
        image = np.zeros(shape, np.float32)
        label = np.zeros(shape, np.uint8)
        for z in range(shape[2]):
            r = (6.0 - z + rng.uniform(-0.5, 0.5)) * scale
            d = np.hypot(x - cx, y - cy)
            label[..., z][np.hypot(x - cx, y - (cy - 1.8 * r)) < 0.8 * r] = 1
            label[..., z][d < r + 2] = 2
            label[..., z][d < r] = 3
        image[label == 3], image[label == 1], image[label == 2], image[label == 0] = 300, 280, 90, 40
        image += rng.normal(0, 10, shape).astype(np.float32)
        frames[phase] = Frame(phase, index, image, label)
    return Subject(id=subject_id, frames=frames, affine=np.diag([*spacing, 1.0]), vendor=vendor, centre=centre,
                   group=group, height=170.0, weight=70.0, n_frames=20)


def ring_cohort(n: int = 4, prefix: str = "p", first_seed: int = 0, **metadata) -> Cohort:
    vendors = metadata.pop("vendors", ("Siemens", "Philips"))
    return Cohort([ring_subject(f"{prefix}{i:03d}", vendors[i % len(vendors)], first_seed + i, **metadata)
                   for i in range(n)], source="reliability")


def write_ring_cohort(folder: Path, n: int = 4, prefix: str = "p", first_seed: int = 0, **metadata) -> Path:
    write_cohort(ring_cohort(n, prefix, first_seed, **metadata), folder)
    return Path(folder)


def write_ring_mnms(folder: Path, n: int = 3) -> Path:
    """An M&Ms layout of `n` subjects; returns the metadata CSV."""
    return write_mnms(ring_cohort(n, prefix="A1B"), folder)


def first_frame(cohort_dir: Path, label: bool = False) -> Path:
    suffix = "_gt.nii.gz" if label else ".nii.gz"
    return sorted(p for p in Path(cohort_dir).rglob(f"*_frame*{suffix}") if label or "_gt" not in p.name)[0]


def save_raw_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write with nibabel directly, bypassing the project's writer (which refuses what we want to plant)."""
    img = nib.Nifti1Image(data, None)
    img.header.set_sform(affine, code=1)
    try:
        img.header.set_qform(affine, code=1)
    except nib.spatialimages.HeaderDataError:  # a singular affine has no quaternion form: sform only
        img.header.set_qform(None, code=0)
    nib.save(img, str(path))


def replace_voxels(path: Path, edit, *, dtype=None, affine=None) -> Path:
    """Rewrite a NIfTI file with `edit(array)` applied (and optionally another dtype or affine)."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).copy()
    if dtype is not None:
        data = data.astype(dtype)
    data = edit(data)
    save_raw_nifti(path, data, img.affine if affine is None else affine)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def gunzip_in_place(path: Path) -> Path:
    """A `.nii.gz` name over plain (uncompressed) NIfTI bytes."""
    path.write_bytes(gzip.decompress(path.read_bytes()))
    return path


def huge_header_nifti(path: Path, shape=(32767, 32767, 64)) -> int:
    """A NIfTI whose header asks for `shape` float32 voxels but whose file is a few hundred bytes; returns the
    bytes the header asks for."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(shape)
    header.set_sform(np.diag([1.0, 1.0, 8.0, 1.0]), code=1)
    header.set_qform(np.diag([1.0, 1.0, 8.0, 1.0]), code=1)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\x00" * 4 + b"\x00" * 64  # header, empty extension flag, a few voxels
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return int(np.prod(shape, dtype=np.int64)) * 4


def write_spec(folder: Path, body: str) -> Path:
    path = Path(folder) / "spec.toml"
    path.write_text(body, encoding="utf-8")
    return path


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
