"""Read any supported cohort layout into a `Cohort`; write a `Cohort` in the cohort layout.

Layouts, detected in this order:
- "mnms":   a CSV with an `External code` column at the root, 4D `<code>_sa.nii.gz` below;
- "mnms2":  `dataset_information.csv` at the root, `dataset/NNN/NNN_SA_ED.nii.gz`;
- "acdc":   ACDC as distributed, `database/{training,testing}/patientNNN/` (or `training/`, `testing/`);
- "cohort": the project's layout = ACDC's: `<id>/Info.cfg`, `<id>/<id>_frameXX[_gt].nii.gz`;
- "dicom":  any folder tree holding DICOM files.

Subjects are listed first (`subject_entries`) and each read on its own, so that `inspect` can
record every problem while `read_cohort` stops at the first one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from ..core.cohort import Cohort, Subject
from ..core.errors import InputError
from . import acdc, dicom, mnms

LAYOUTS = ("mnms", "mnms2", "acdc", "cohort", "dicom")
_MAX_SCAN_FILES = 1000  # how many files to sniff for a DICOM preamble when guessing the layout


@dataclass(frozen=True)
class SubjectEntry:
    """One subject found on disk: where it is (for messages) and how to read it."""

    source: Path
    load: Callable[[], Subject]


def _raise(error: InputError) -> Subject:
    raise error


def _has_dicom(root: Path) -> bool:
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            if dicom.is_clearly_not_dicom(path):
                continue
            if path.suffix.lower() == ".dcm":
                return True
            try:
                with open(path, "rb") as fh:
                    if fh.read(132)[128:] == b"DICM":
                        return True
            except OSError:
                pass
            seen += 1
            if seen >= _MAX_SCAN_FILES:
                return False
    return False


def detect_layout(path) -> str:
    """The layout name of `path` (see the module docstring); InputError when there is none."""
    root = Path(path)
    if not root.exists():
        raise InputError(root, "no such file or folder")
    if not root.is_dir():
        raise InputError(root, "expected a folder holding a cohort")
    if not any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise InputError(root, "empty folder: no subjects")
    if mnms.find_mnms_csv(root) is not None:
        return "mnms"
    if (root / mnms.MNMS2_CSV).is_file():
        return "mnms2"
    base = root / "database" if (root / "database").is_dir() else root
    if any((base / split).is_dir() for split in acdc.ACDC_SPLITS):
        return "acdc"
    if any(acdc.looks_like_subject_folder(p) for p in root.iterdir()):
        return "cohort"
    if _has_dicom(root):
        return "dicom"
    raise InputError(root, "no cohort found (expected subject folders with Info.cfg, an M&Ms CSV, or DICOM files)")


def subject_entries(path) -> tuple[str, list[SubjectEntry]]:
    """(layout, one entry per subject). Raises InputError only for a problem of the whole folder."""
    root = Path(path)
    layout = detect_layout(root)
    if layout in ("cohort", "acdc"):
        entries = [SubjectEntry(f, partial(acdc.read_subject_folder, f)) for f in acdc.subject_folders(root)]
    elif layout == "mnms":
        entries = [SubjectEntry(f, partial(mnms.read_mnms_subject, f, meta)) for f, meta in mnms.mnms_entries(root)]
    elif layout == "mnms2":
        entries = [SubjectEntry(f, partial(mnms.read_mnms2_subject, f, meta)) for f, meta in mnms.mnms2_entries(root)]
    else:
        entries = _dicom_entries(root)
    if not entries:
        raise InputError(root, f"no subjects found ({layout} layout)")
    return layout, entries


def _dicom_entries(root: Path) -> list[SubjectEntry]:
    """One entry per bad file, then one per patient. A patient whose folder holds a bad file reports that file
    (the cause) instead of being read without it, which would blame a symptom such as a missing slice."""
    sources, errors = dicom.scan_dicom_folder(root)
    folders = [src.folder for _, src in sources]
    blamed: dict[Path, InputError] = {}
    entries = []
    for error in errors:
        owners = [f for f in folders if Path(error.path).is_relative_to(f)]
        deepest = max(owners, key=lambda f: len(f.parts), default=None)
        if deepest is not None and sum(f == deepest for f in folders) == 1 and deepest not in blamed:
            blamed[deepest] = error
        else:
            entries.append(SubjectEntry(Path(error.path), partial(_raise, error)))
    for sid, src in sources:
        if src.folder in blamed:
            entries.append(SubjectEntry(Path(blamed[src.folder].path), partial(_raise, blamed[src.folder])))
        else:
            entries.append(SubjectEntry(src.folder, partial(dicom.read_dicom_subject, sid, src)))
    return entries


def duplicate_id_problem(subject_id: str, source: Path, seen: dict[str, Path]) -> InputError | None:
    """An error when `subject_id` (case-insensitively, as file systems may compare) was already seen."""
    key = subject_id.lower()
    if key in seen:
        return InputError(source, f"duplicate subject id {subject_id!r} (also {seen[key]})")
    seen[key] = source
    return None


def read_cohort(path) -> Cohort:
    """Every subject of `path`, in any supported layout; the first problem raises InputError."""
    _, entries = subject_entries(path)
    subjects, seen = [], {}
    for entry in entries:
        subject = entry.load()
        problem = duplicate_id_problem(subject.id, entry.source, seen)
        if problem:
            raise problem
        subjects.append(subject)
    return Cohort(subjects, source=str(path))


def write_cohort(cohort: Cohort, out_dir, descrip: str = "") -> Path:
    """Write `cohort` in the cohort layout under `out_dir` (created); refuses to overwrite a subject folder.
    `descrip` is written into every NIfTI header (generated cohorts pass the synthetic mark)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for subject in cohort:
        acdc.write_subject_folder(subject, out_dir, descrip=descrip)
    return out_dir


__all__ = ["LAYOUTS", "SubjectEntry", "detect_layout", "subject_entries", "read_cohort", "write_cohort"]
