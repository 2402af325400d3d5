"""The bad-input catalogue: each case builds one broken cohort on disk and says which file the error must
name and what it must say. Shared by the end-to-end matrix (every case through every command that reads a
cohort) and by the docs table (`docs/reliability.md`)."""
from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom

from dicom_series_writer import write_dicom_series
from reliability_data import (first_frame, gunzip_in_place, huge_header_nifti, replace_voxels, ring_subject,
                              truncate, write_ring_cohort, write_ring_mnms)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]  # (empty folder) -> the file or folder the error must name
    problem: str  # what the one error line must say


def _cohort(root: Path) -> Path:
    return write_ring_cohort(root, 4)


def _voxel(value):
    def edit(array):
        array[1, 1, 1] = value
        return array
    return edit


def _truncated(root):
    return truncate(first_frame(_cohort(root)))


def _not_gzip(root):
    return gunzip_in_place(first_frame(_cohort(root)))


def _nan(root):
    return replace_voxels(first_frame(_cohort(root)), _voxel(np.nan))


def _inf(root):
    return replace_voxels(first_frame(_cohort(root)), _voxel(-np.inf))


def _huge(root):
    path = first_frame(_cohort(root))
    huge_header_nifti(path)
    return path


def _singular(root):
    return replace_voxels(first_frame(_cohort(root)), lambda a: a, affine=np.diag([4.0, 0.0, 8.0, 1.0]))


def _sheared(root):
    affine = np.diag([4.0, 4.0, 8.0, 1.0])
    affine[0, 1] = 2.0
    return replace_voxels(first_frame(_cohort(root)), lambda a: a, affine=affine)


def _label_shape(root):
    return replace_voxels(first_frame(_cohort(root), label=True), lambda a: a[:-2])


def _label_spacing(root):
    return replace_voxels(first_frame(_cohort(root), label=True), lambda a: a, affine=np.diag([4.0, 4.0, 10.0, 1.0]))


def _label_values(root):
    return replace_voxels(first_frame(_cohort(root), label=True), _voxel(7))


def _empty(root):
    root.mkdir(parents=True)
    return root


def _duplicate_ids(root):
    """ACDC as distributed, with one patient in both training and testing (ids compare case-insensitively)."""
    write_ring_cohort(root / "database" / "training", 2, prefix="patient")
    write_ring_cohort(root / "database" / "testing", 1, prefix="PATIENT", first_seed=7)
    return root / "database" / "testing" / "PATIENT000"


def _rename_subject(root: Path, new: str) -> Path:
    cohort = _cohort(root)
    old = cohort / "p001"
    for f in old.iterdir():
        f.rename(f.with_name(f.name.replace("p001", new)))
    return old.rename(cohort / new)


def _dotdot_id(root):
    return _rename_subject(root, "p..001")


def _separator_id(root):
    return _rename_subject(root, "p\\001")


def _mnms2_traversal(root):
    """M&Ms-2 builds paths from its CSV's codes: a code that climbs out of the cohort."""
    (root / "dataset").mkdir(parents=True)
    csv_path = root / "dataset_information.csv"
    csv_path.write_text("SUBJECT_CODE,VENDOR\n../../etc,Siemens\n", encoding="utf-8")
    return csv_path


def _info_missing(root):
    path = _cohort(root) / "p001" / "Info.cfg"
    path.unlink()
    return path


def _info_binary(root):
    path = _cohort(root) / "p001" / "Info.cfg"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    return path


def _info_garbage(root):
    path = _cohort(root) / "p001" / "Info.cfg"
    path.write_text("ED: first\nES: 9\n", encoding="utf-8")
    return path


def _mnms_missing_column(root):
    csv_path = write_ring_mnms(root)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    drop = rows[0].index("ES")
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([row[:drop] + row[drop + 1:] for row in rows])
    return csv_path


def dicom_cohort(root: Path, n: int = 3) -> Path:
    for i in range(n):
        write_dicom_series(ring_subject(f"p{i:03d}", seed=i), root / f"patient{i}", tags={"PatientID": f"PID{i}"})
    return root


def _one_dicom(root) -> Path:
    return sorted((dicom_cohort(root) / "patient1").glob("*.dcm"))[2]


def _dicom_no_preamble(root):
    path = _one_dicom(root)
    path.write_bytes(path.read_bytes()[132:])
    return path


def _dicom_truncated(root):
    return truncate(_one_dicom(root), keep=0.8)


def _dicom_no_position(root):
    path = _one_dicom(root)
    ds = pydicom.dcmread(path)
    del ds.ImagePositionPatient
    ds.save_as(path)
    return path


def _dicom_mixed_series(root):
    """A second series of the same patient in another plane (a long-axis view beside the short-axis stack)."""
    dicom_cohort(root)
    other = ring_subject("x", seed=9)
    other.affine = np.array([[0, 4.0, 0, 0], [4.0, 0, 0, 0], [0, 0, 8.0, 0], [0, 0, 0, 1]])
    written = write_dicom_series(other, root / "patient1" / "lax", tags={"PatientID": "PID1"})
    return sorted(written)[0]


CASES = [
    Case("truncated .nii.gz", _truncated, "truncated or corrupt"),
    Case(".gz that is not gzip", _not_gzip, "named .gz but is not a gzip file"),
    Case("NaN voxels", _nan, "NaN or inf"),
    Case("inf voxels", _inf, "NaN or inf"),
    Case("huge dimensions in a tiny header", _huge, "above the cap"),
    Case("singular affine", _singular, "degenerate (singular) affine"),
    Case("non-orthogonal affine", _sheared, "non-orthogonal affine"),
    Case("image/label shape mismatch", _label_shape, "label shape (38, 40, 4) differs from image shape (40, 40, 4)"),
    Case("image/label spacing mismatch", _label_spacing, "spacing [4.0, 4.0, 10.0] differs"),
    Case("labels outside 0-3", _label_values, "unexpected label values [7]"),
    Case("empty cohort", _empty, "empty folder: no subjects"),
    Case("duplicate subject ids", _duplicate_ids, "duplicate subject id"),
    Case("id with '..'", _dotdot_id, "unsafe subject id 'p..001'"),
    Case("id with a path separator", _separator_id, "unsafe subject id 'p\\\\001'"),
    Case("M&Ms-2 code climbing out", _mnms2_traversal, "unsafe subject id '../../etc'"),
    Case("Info.cfg missing", _info_missing, "file not found"),
    Case("Info.cfg binary", _info_binary, "not a text file"),
    Case("Info.cfg garbage value", _info_garbage, "ED must be a whole number, got 'first'"),
    Case("M&Ms CSV missing a column", _mnms_missing_column, "missing column 'ES'"),
    Case("DICOM without preamble", _dicom_no_preamble, "not a DICOM file"),
    Case("DICOM truncated pixel data", _dicom_truncated, "truncated pixel data"),
    Case("DICOM mixed series", _dicom_mixed_series, "orientation differs"),
    Case("DICOM missing position", _dicom_no_position, "missing ImagePositionPatient"),
]


def build(case: Case, root: Path) -> tuple[Path, Path]:
    """(the cohort folder, the file the error must name) for `case` under `root`/cohort."""
    folder = root / "cohort"
    if folder.exists():
        shutil.rmtree(folder)
    return folder, case.build(folder)
