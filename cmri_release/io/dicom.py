"""A folder of short-axis cine DICOM images (any file names, any depth) read as subjects.

Grouping: one subject per patient (PatientID, else StudyInstanceUID), so that one person never
becomes two subjects; the patient's series (one series for the whole stack, or one per slice as
many scanners write them) must share one orientation. Slices are ordered by ImagePositionPatient
projected on the slice normal, running the way the scanner numbered them (SeriesNumber, then
InstanceNumber; usually base to apex), so a NIfTI written from the same volume lines up with it.
At each slice position the images are cine frames ordered by TriggerTime, else InstanceNumber.

Phases: ED is the first frame (the scan is triggered on the R wave, which is end-diastole).
ES is read from an optional `phases.cfg` (`ED: n`, `ES: m`, 1-based, Info.cfg syntax) in the
subject's folder; without one it is the frame a third of the way through the cycle (systole
takes about a third of the RR interval at rest). Labels are `labels_ED.nii.gz` / `labels_ES.nii.gz`
(ACDC label values, on the same grid as the series) in the subject's folder, the deepest folder
holding all its DICOM files; without them the subject is image-only (label None).

Privacy: subject ids are `dcm001`, `dcm002`, ... in the order of a hash of the Study and Series
UIDs, so an id carries no identifier and does not depend on file names. Identifiers (names, ids,
dates, UIDs, institution, private tags) stay in local variables used for grouping only; nothing
but geometry, pixels, Manufacturer (normalised) and the frame count reaches the Subject.

Refused (InputError naming the file): a `.dcm` or unknown file that is not DICOM (no preamble),
truncated pixel data, missing position/orientation/spacing, mixed orientations, uneven or
duplicated slices, multi-frame or colour images. Files that are clearly not DICOM (`.txt`,
`.json`, NIfTI, ...) and DICOMDIR are skipped.
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..core.cohort import Frame, Subject
from ..core.errors import InputError
from .infocfg import read_info_cfg
from .nifti import check_affine, check_same_grid, describe, load_nifti
from .vendors import normalise_vendor

NOT_DICOM_SUFFIXES = {".txt", ".json", ".md", ".csv", ".cfg", ".xml", ".html", ".htm", ".png", ".jpg", ".jpeg",
                      ".nii", ".gz", ".log", ".yaml", ".yml", ".toml", ".pdf", ".zip"}
ORIENTATION_TOL = 1e-3  # direction cosines that differ by more are a different plane
POSITION_TOL_MM = 0.01  # two images within this distance along the normal share a slice
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM patient space is LPS, NIfTI world space RAS


@dataclass
class DicomImage:
    """Header facts of one image file; the grouping keys never leave this module."""

    path: Path
    patient_key: str
    study_uid: str
    series_uid: str
    orientation: np.ndarray  # 6 direction cosines (row, column)
    position: np.ndarray  # ImagePositionPatient, mm (LPS)
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    thickness: float | None
    time: tuple[float, int]  # (TriggerTime or inf, InstanceNumber or 0)
    order: tuple[int, int]  # (SeriesNumber, InstanceNumber): the scanner's own slice order
    manufacturer: str


@dataclass
class DicomSubjectSource:
    folder: Path
    images: list[DicomImage]


def is_clearly_not_dicom(path: Path) -> bool:
    return path.name.startswith(".") or path.name == "DICOMDIR" or path.suffix.lower() in NOT_DICOM_SUFFIXES


def _floats(ds, keyword: str, count: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != count:
        raise InputError(path, f"missing {keyword}")
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"invalid {keyword} {value!r}") from None
    if not np.all(np.isfinite(out)):
        raise InputError(path, f"invalid {keyword}")
    return out


def _refusing_malformed(read):
    """pydicom decodes elements lazily, so a damaged element raises (ValueError, TypeError, NotImplementedError,
    ...) only when it is used, and warns about odd values on the way; every such failure is an InputError naming
    the file, and the warnings are not printed (the file is either refused on one line or fit for use)."""
    @functools.wraps(read)
    def wrapper(arg):
        path = getattr(arg, "path", arg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return read(arg)
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - any other failure is a malformed file
                while exc.__cause__ is not None:  # pydicom re-raises with a traceback in the message; keep the cause
                    exc = exc.__cause__
                raise InputError(path, f"malformed DICOM ({describe(exc)})") from None
    return wrapper


@_refusing_malformed
def read_header(path: Path) -> DicomImage:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise InputError(path, "not a DICOM file (no 128-byte preamble and 'DICM' prefix)") from None
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise InputError(path, f"unreadable DICOM ({describe(exc)})") from None
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns"):
        if not ds.get(keyword):
            raise InputError(path, f"missing {keyword}")
    orientation = _floats(ds, "ImageOrientationPatient", 6, path)
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > ORIENTATION_TOL or abs(np.linalg.norm(col) - 1) > ORIENTATION_TOL \
            or abs(row @ col) > ORIENTATION_TOL:
        raise InputError(path, "ImageOrientationPatient is not two orthogonal unit vectors")
    spacing = _floats(ds, "PixelSpacing", 2, path)
    if np.any(spacing <= 0):
        raise InputError(path, f"invalid PixelSpacing {spacing.tolist()}")
    thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    trigger = ds.get("TriggerTime")
    return DicomImage(
        path=path, patient_key=str(ds.get("PatientID") or "") or str(ds.StudyInstanceUID),
        study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID), orientation=orientation,
        position=_floats(ds, "ImagePositionPatient", 3, path), pixel_spacing=(float(spacing[0]), float(spacing[1])),
        thickness=float(thickness) if thickness else None,
        time=(float(trigger) if trigger not in (None, "") else float("inf"), int(ds.get("InstanceNumber") or 0)),
        order=(int(ds.get("SeriesNumber") or 0), int(ds.get("InstanceNumber") or 0)),
        manufacturer=str(ds.get("Manufacturer") or ""))


def scan_dicom_folder(root: Path) -> tuple[list[tuple[str, DicomSubjectSource]], list[InputError]]:
    """Read every header below `root`; returns ([(subject id, source)], [errors of single files])."""
    images, errors = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if is_clearly_not_dicom(path):
                continue
            try:
                images.append(read_header(path))
            except InputError as exc:
                errors.append(exc)
    by_patient: dict[str, list[DicomImage]] = defaultdict(list)
    for image in images:
        by_patient[image.patient_key].append(image)

    def order_key(group: list[DicomImage]) -> str:
        uids = sorted({i.study_uid for i in group}) + sorted({i.series_uid for i in group})
        return hashlib.sha256("|".join(uids).encode()).hexdigest()

    groups = sorted(by_patient.values(), key=order_key)
    sources = []
    for number, group in enumerate(groups, start=1):
        folder = Path(os.path.commonpath([str(i.path.parent) for i in group]))
        sources.append((f"dcm{number:03d}", DicomSubjectSource(folder=folder, images=group)))
    return sources, errors


def _check_orientations(images: list[DicomImage]) -> np.ndarray:
    by_series = defaultdict(list)
    for image in images:
        by_series[image.series_uid].append(image)
    reference = images[0].orientation
    for series in by_series.values():
        for image in series:
            if np.abs(image.orientation - series[0].orientation).max() > ORIENTATION_TOL:
                raise InputError(image.path, "orientation differs from the rest of its series (mixed orientations)")
        if np.abs(series[0].orientation - reference).max() > ORIENTATION_TOL:
            raise InputError(series[0].path, "series orientation differs from the patient's other series "
                                             "(keep only the short-axis stack)")
    return reference


@_refusing_malformed
def read_pixels(image: DicomImage) -> np.ndarray:
    """Pixel values after RescaleSlope/Intercept, float32 (Rows, Columns); checks the byte length first."""
    path = image.path
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise InputError(path, f"unreadable DICOM ({describe(exc)})") from None
    if "PixelData" not in ds:
        raise InputError(path, "no pixel data")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InputError(path, "not a greyscale image (SamplesPerPixel != 1)")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise InputError(path, "multi-frame (enhanced) DICOM is not supported; export classic single-frame images")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        bits = int(ds.get("BitsAllocated") or 0)
        if bits not in (8, 16, 32):
            raise InputError(path, f"unsupported BitsAllocated {bits}")
        expected = int(ds.Rows) * int(ds.Columns) * bits // 8
        if len(ds.PixelData) < expected:
            raise InputError(path, f"truncated pixel data: {len(ds.PixelData)} bytes, expected {expected}")
    try:
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:
        raise InputError(path, f"cannot decode pixel data ({describe(exc)})") from None
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    pixels = pixels * np.float32(slope) + np.float32(intercept)
    if pixels.shape != (int(ds.Rows), int(ds.Columns)) or not np.all(np.isfinite(pixels)):
        raise InputError(path, "pixel data has the wrong shape or non-finite values")
    return pixels


def _slices(images: list[DicomImage], normal: np.ndarray, folder: Path) -> list[list[DicomImage]]:
    """Images grouped by slice position (in the scanner's numbering order), each slice in time order."""
    ordered = sorted(images, key=lambda i: float(i.position @ normal))
    slices: list[list[DicomImage]] = []
    for image in ordered:
        if slices and abs(float((image.position - slices[-1][0].position) @ normal)) <= POSITION_TOL_MM:
            if np.abs(image.position - slices[-1][0].position).max() > POSITION_TOL_MM:
                raise InputError(image.path, "in-plane position differs from other images of the same slice")
            slices[-1].append(image)
        else:
            slices.append([image])
    for group in slices:
        group.sort(key=lambda i: i.time)
        for a, b in zip(group, group[1:]):
            if a.time == b.time:
                raise InputError(b.path, f"same slice position and time as {a.path.name} (duplicated image)")
    # keep the scanner's slice order (usually base to apex) when it runs against the normal
    if len(slices) > 1 and min(i.order for i in slices[0]) > min(i.order for i in slices[-1]):
        slices.reverse()
    counts = Counter(len(g) for g in slices)
    if len(counts) > 1:
        raise InputError(folder, f"slices have different numbers of cine frames {dict(counts)}")
    return slices


def _affine(slices: list[list[DicomImage]], normal: np.ndarray, folder: Path) -> np.ndarray:
    first = slices[0][0]
    row, col = first.orientation[:3], first.orientation[3:]
    lps = np.eye(4)
    lps[:3, 0] = row * first.pixel_spacing[1]  # x = column index, along the row direction
    lps[:3, 1] = col * first.pixel_spacing[0]  # y = row index, along the column direction
    lps[:3, 3] = first.position
    positions = np.array([s[0].position for s in slices])
    if len(slices) == 1:
        if not first.thickness:
            raise InputError(first.path, "a single slice without SliceThickness/SpacingBetweenSlices")
        lps[:3, 2] = normal * first.thickness
    else:
        steps = np.diff(positions, axis=0)
        step = (positions[-1] - positions[0]) / (len(slices) - 1)
        tol = max(POSITION_TOL_MM, 0.01 * float(np.linalg.norm(step)))
        if np.abs(steps - step).max() > tol:
            raise InputError(folder, f"uneven slice spacing {np.round(np.linalg.norm(steps, axis=1), 3).tolist()} mm")
        lps[:3, 2] = step
    return check_affine(LPS_TO_RAS @ lps, folder)


def _phases(folder: Path, n_frames: int) -> tuple[int, int]:
    cfg = folder / "phases.cfg"
    if cfg.exists():
        info = read_info_cfg(cfg)
        if max(info.ed, info.es) > n_frames:
            raise InputError(cfg, f"frame {max(info.ed, info.es)} is beyond the series' {n_frames} frames")
        return info.ed, info.es
    return 1, max(2, round(n_frames / 3) + 1)


def read_dicom_subject(subject_id: str, source: DicomSubjectSource) -> Subject:
    images, folder = source.images, source.folder
    orientation = _check_orientations(images)
    normal = np.cross(orientation[:3], orientation[3:])
    slices = _slices(images, normal, folder)
    n_frames = len(slices[0])
    if n_frames < 2:
        raise InputError(folder, "one image per slice position: not a cine series (ED and ES are needed)")
    affine = _affine(slices, normal, folder)
    frames = {}
    for phase, index in zip(("ED", "ES"), _phases(folder, n_frames)):
        # pixel_array is (Rows, Columns) = (y, x); the cohort stores (x, y, z)
        volume = np.stack([read_pixels(s[index - 1]).T for s in slices], axis=-1)
        label = None
        label_path = folder / f"labels_{phase}.nii.gz"
        if label_path.exists():
            label, label_affine = load_nifti(label_path, label=True)
            if label.shape != volume.shape:
                raise InputError(label_path, f"label shape {label.shape} differs from the series' {volume.shape}")
            check_same_grid(affine, label_affine, "DICOM series", label_path)
        frames[phase] = Frame(phase=phase, index=index, image=volume, label=label)
    vendor = normalise_vendor(Counter(i.manufacturer for i in images).most_common(1)[0][0])
    return Subject(id=subject_id, frames=frames, affine=affine, vendor=vendor, n_frames=n_frames,
                   extra={"source_format": "dicom"})
