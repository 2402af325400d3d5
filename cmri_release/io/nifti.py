"""Safe NIfTI reading and consistent NIfTI writing.

Reading refuses, before or while touching the voxels, everything the bad-input catalogue lists:
a `.gz` that is not gzip, a truncated file (nibabel only notices when the data are read, so the
read is forced here), a header that asks for more voxels than any cardiac volume needs, NaN/inf
voxels, and affines that are singular or sheared (a cohort's geometry must survive a round trip).
Every refusal is an `InputError` naming the file.

Writing stores the sform and the qform from the same affine (both code 1, scanner coordinates),
float32 images, uint8 labels, and clears the free-text header fields that have leaked patient
names in the past.
"""
from __future__ import annotations

import contextlib
import gzip
import logging
import os
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ..core.errors import InputError
from ..core.labels import check_labels

# Caps on the voxel count a header may ask for, checked before anything is allocated.
# A cardiac short-axis volume is at most about 512 x 512 x 64; a cine adds at most ~64 frames.
MAX_VOXELS = {3: 512 * 512 * 256, 4: 512 * 512 * 64 * 64}
# |cos| between two normalised affine columns above this means a sheared (non-orthogonal) grid.
ORTHOGONALITY_TOL = 1e-3
_GZIP_MAGIC = b"\x1f\x8b"
# Two volumes on "one grid": voxel sizes within 1e-3 relative, origin/direction within 1e-3 mm
# (float32 header precision is far finer, so this only forgives rounding).
GRID_RTOL, GRID_ATOL = 1e-3, 1e-3


def describe(exc: BaseException) -> str:
    """An exception as one short line (library messages can span lines)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _check_gzip_stream(path: Path, limit: int = 1 << 30) -> None:
    """Stream through (at most `limit` bytes of) a gzip file; InputError if it is cut short or corrupt."""
    try:
        with gzip.open(path, "rb") as fh:
            total = 0
            while total < limit and (chunk := fh.read(1 << 20)):
                total += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise InputError(path, f"truncated or corrupt gzip stream ({describe(exc)})") from None


def _open_header(path: Path):
    """nib.load (header only) with every failure turned into an InputError."""
    if not path.is_file():
        raise InputError(path, "file not found")
    if _is_gz(path):
        with open(path, "rb") as fh:
            if fh.read(2) != _GZIP_MAGIC:
                raise InputError(path, "named .gz but is not a gzip file")
    try:
        img = nib.load(str(path))
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"truncated or corrupt gzip stream ({describe(exc)})") from None
    except Exception as exc:  # nibabel raises many types for a bad header
        if _is_gz(path):
            _check_gzip_stream(path)  # a header cut short reads as "unknown file type"; say what it is
        raise InputError(path, f"not a readable NIfTI file ({describe(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"not a NIfTI image ({type(img).__name__})")
    return img


def _check_shape(path: Path, img, ndim: int) -> tuple[int, ...]:
    shape = tuple(int(v) for v in img.header.get_data_shape())
    # trailing singleton axes (a 3D volume stored as X,Y,Z,1) are harmless
    while len(shape) > ndim and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != ndim:
        raise InputError(path, f"expected a {ndim}D volume, found shape {shape}")
    if any(v < 1 for v in shape):
        raise InputError(path, f"header gives an empty or negative dimension {shape}")
    n_voxels = int(np.prod(shape, dtype=np.int64))
    if n_voxels > MAX_VOXELS[ndim]:
        raise InputError(path, f"header asks for {n_voxels} voxels {shape}, above the cap of {MAX_VOXELS[ndim]}")
    dtype = img.header.get_data_dtype()
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputError(path, f"unsupported voxel type {dtype} (expected integers or floats)")
    raw_offset = float(img.header["vox_offset"])
    if not np.isfinite(raw_offset) or raw_offset < 0:
        raise InputError(path, f"invalid vox_offset {raw_offset}")
    if not _is_gz(path):
        # an uncompressed file must hold every byte its header promises
        needed = int(getattr(img.dataobj, "offset", raw_offset)) + n_voxels * dtype.itemsize
        if os.path.getsize(path) < needed:
            raise InputError(path, f"truncated: header needs {needed} bytes, file has {os.path.getsize(path)}")
    return shape


def check_affine(affine: np.ndarray, source) -> np.ndarray:
    """Refuse a non-finite, singular or sheared voxel-to-world affine."""
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise InputError(source, "affine is not a finite 4x4 matrix")
    cols = aff[:3, :3]
    norms = np.linalg.norm(cols, axis=0)
    if np.any(norms < 1e-6) or abs(np.linalg.det(cols)) < 1e-9 * float(np.prod(norms)):
        raise InputError(source, f"degenerate (singular) affine, voxel sizes {np.round(norms, 6).tolist()}")
    unit = cols / norms
    cosines = np.abs(unit.T @ unit - np.eye(3))
    if cosines.max() > ORTHOGONALITY_TOL:
        raise InputError(source, f"non-orthogonal affine (axes sheared, max |cos| {cosines.max():.4f})")
    return aff


def check_same_grid(reference: np.ndarray, other: np.ndarray, what: str, source) -> None:
    """Refuse a volume whose spacing, origin or orientation differs from `what`'s (image vs label, ED vs ES)."""
    ref_spacing = np.linalg.norm(reference[:3, :3], axis=0)
    spacing = np.linalg.norm(other[:3, :3], axis=0)
    if not np.allclose(ref_spacing, spacing, rtol=GRID_RTOL, atol=1e-6):
        raise InputError(source, f"spacing {np.round(spacing, 4).tolist()} differs from {what}'s "
                                 f"{np.round(ref_spacing, 4).tolist()}")
    if not np.allclose(reference, other, rtol=GRID_RTOL, atol=GRID_ATOL):
        raise InputError(source, f"origin or orientation differs from {what}'s")


@contextlib.contextmanager
def _quiet_nibabel():
    """nibabel logs every header fix it makes (sizeof_hdr, vox_offset, unknown codes) straight to stderr, and numpy
    warns on overflowing scale factors; the checks here decide, and a refusal is one line naming the file."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def load_nifti(path, *, label: bool = False, ndim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume safely. Returns (array, affine): float32 for images, uint8 ACDC-valued for labels.

    `ndim` is 3 for a frame, 4 for a cine (X, Y, Z, T). Label values are checked, not mapped.
    """
    with _quiet_nibabel():
        return _load_nifti(Path(path), label, ndim)


def _load_nifti(path: Path, label: bool, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    img = _open_header(path)
    shape = _check_shape(path, img, ndim)
    affine = check_affine(img.affine, path)
    try:
        data = np.asanyarray(img.dataobj)  # forces the whole (possibly lazy gzip) read
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"truncated or corrupt data ({describe(exc)})") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read voxel data ({describe(exc)})") from None
    data = data.reshape(shape)
    if label:
        return check_labels(data, path), affine
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise InputError(path, "image holds NaN or inf voxels")
    return data.astype(np.float32, copy=False), affine


def save_nifti(path, array: np.ndarray, affine: np.ndarray, *, label: bool = False, descrip: str = "") -> Path:
    """Write a volume with matching sform/qform (code 1), float32 image or uint8 label, free text cleared
    except `descrip` when given (a synthetic cohort's files say so inside: at most 80 ASCII characters)."""
    path = Path(path)
    affine = check_affine(affine, path)
    arr = check_labels(array, path) if label else np.asarray(array, dtype=np.float32)
    if not label and not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: refusing to write NaN or inf voxels")
    img = nib.Nifti1Image(arr, affine)
    hdr = img.header
    hdr.set_data_dtype(np.uint8 if label else np.float32)
    hdr.set_sform(affine, code=1)
    hdr.set_qform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    for text_field in ("descrip", "aux_file", "intent_name", "db_name", "data_type"):
        hdr[text_field] = b""
    if descrip:
        text = descrip.encode("ascii")
        if len(text) > 80:
            raise ValueError(f"NIfTI descrip is at most 80 characters, got {len(text)}")
        hdr["descrip"] = text
    img.header.extensions.clear()
    nib.save(img, str(path))
    return path
