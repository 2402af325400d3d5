"""M&Ms and M&Ms-2 layouts, read (tests/mnms_writer.py writes the M&Ms layout for the tests).

M&Ms: a metadata CSV at the root with at least `External code`, `ED`, `ES`, `Vendor` (the columns
nnU-Net's `Dataset114_MNMs.py` reads), optionally `VendorName`, `Centre`, `Pathology`, `Height`,
`Weight`; subject folders `<code>/` anywhere below (`Training/Labeled`, `Validation`, ...) with a
4D cine `<code>_sa.nii.gz` (X, Y, Z, T) and, when annotated, `<code>_sa_gt.nii.gz`. `ED` and `ES`
are 0-based indices into T, as nnU-Net uses them; `Frame.index` stores them 1-based like ACDC.
`Vendor` is a letter (A Siemens, B Philips, C GE, D Canon) unless `VendorName` is given.

M&Ms-2: `dataset_information.csv` with `SUBJECT_CODE`, `VENDOR` and optionally `DISEASE`,
`CENTRE` (matched case-insensitively; CineMA's converter reads SUBJECT_CODE, DISEASE, VENDOR,
SCANNER, FIELD), and `dataset/NNN/NNN_SA_{ED,ES}.nii.gz` with `_gt` labels. M&Ms-2 publishes no
ED/ES frame numbers: its frames are numbered 1 (ED) and 2 (ES) and `extra["frame_numbers"]`
says so.

Both label 1 LV, 2 MYO, 3 RV; labels are mapped to ACDC's order on reading.
Age and sex columns are never copied.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..core.cohort import PHASES, Frame, Subject, check_subject_id
from ..core.errors import InputError
from ..core.labels import mnms_to_acdc
from .nifti import check_same_grid, load_nifti
from .vendors import MNMS_VENDOR_LETTERS, normalise_vendor

MNMS_REQUIRED = ("External code", "ED", "ES", "Vendor")
MNMS2_CSV = "dataset_information.csv"
MNMS2_REQUIRED = ("SUBJECT_CODE", "VENDOR")
_MAX_CSV_BYTES = 16 * 1024 * 1024


def read_csv_rows(path: Path, required: tuple[str, ...], *, ignore_case: bool = False) -> list[dict[str, str]]:
    """Rows of a metadata CSV as dicts; refuses a missing column, naming the CSV and the column."""
    if path.stat().st_size > _MAX_CSV_BYTES:
        raise InputError(path, "metadata CSV is implausibly large")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a readable CSV ({exc})") from None
    if not rows:
        raise InputError(path, "empty CSV")
    header = [h.strip() for h in rows[0]]
    if ignore_case:
        header = [h.upper() for h in header]
    for column in required:
        if column not in header:
            raise InputError(path, f"missing column {column!r}")
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(path, f"row {number} has {len(row)} cells, header has {len(header)}")
        out.append({h: cell.strip() for h, cell in zip(header, row)})
    return out


def find_mnms_csv(root: Path) -> Path | None:
    for path in sorted(root.glob("*.csv")):
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            if "External code" in fh.readline():
                return path
    return None


def _number(csv_path, row_number, column, value, *, whole=False):
    if value == "" and not whole:
        return None
    try:
        number = float(value)
    except ValueError:
        raise InputError(csv_path, f"row {row_number}: {column} must be a number, got {value!r}") from None
    if not np.isfinite(number) or number < 0 or (whole and not number.is_integer()):
        raise InputError(csv_path, f"row {row_number}: invalid {column} {value!r}")
    return int(number) if whole else number


def _vendor(row: dict[str, str]) -> str:
    if row.get("VendorName"):
        return normalise_vendor(row["VendorName"])
    return MNMS_VENDOR_LETTERS.get(row["Vendor"].upper(), normalise_vendor(row["Vendor"]))


def mnms_entries(root: Path) -> list[tuple[Path, dict]]:
    """(subject folder, its CSV metadata) for every `<code>_sa.nii.gz` below `root`."""
    csv_path = find_mnms_csv(root)
    if csv_path is None:
        raise InputError(root, "no M&Ms metadata CSV (a .csv whose header has 'External code')")
    rows = read_csv_rows(csv_path, MNMS_REQUIRED)
    by_code = {}
    for number, row in enumerate(rows, start=2):
        code = row["External code"]
        if code in by_code:
            raise InputError(csv_path, f"External code {code!r} listed twice")
        by_code[code] = {
            "csv": csv_path, "ed": _number(csv_path, number, "ED", row["ED"], whole=True),
            "es": _number(csv_path, number, "ES", row["ES"], whole=True), "vendor": _vendor(row),
            "centre": row.get("Centre") or "unknown", "group": row.get("Pathology") or "unknown",
            "height": _number(csv_path, number, "Height", row.get("Height", "")),
            "weight": _number(csv_path, number, "Weight", row.get("Weight", "")),
        }
    entries = []
    for image in sorted(root.rglob("*_sa.nii.gz")):
        folder = image.parent
        meta = by_code.get(folder.name)
        if meta is None:
            meta = {"missing": f"{folder.name!r} has no row in {csv_path.name}"}
        entries.append((folder, meta))
    return entries


def read_mnms_subject(folder: Path, meta: dict) -> Subject:
    folder = Path(folder)
    if "missing" in meta:
        raise InputError(folder, meta["missing"])
    subject_id = check_subject_id(folder.name, folder)
    image_path = folder / f"{subject_id}_sa.nii.gz"
    cine, affine = load_nifti(image_path, ndim=4)
    n_frames = cine.shape[3]
    for phase in ("ed", "es"):
        if not 0 <= meta[phase] < n_frames:
            raise InputError(meta["csv"], f"{phase.upper()} {meta[phase]} of {subject_id!r} is outside the "
                                          f"cine's {n_frames} frames (0-based)")
    if meta["ed"] == meta["es"]:
        raise InputError(meta["csv"], f"ED and ES of {subject_id!r} are the same frame")
    labels = None
    label_path = folder / f"{subject_id}_sa_gt.nii.gz"
    if label_path.exists():
        labels, label_affine = load_nifti(label_path, label=True, ndim=4)
        if labels.shape != cine.shape:
            raise InputError(label_path, f"label shape {labels.shape} differs from image shape {cine.shape}")
        check_same_grid(affine, label_affine, image_path.name, label_path)
    frames = {}
    for phase, t in (("ED", meta["ed"]), ("ES", meta["es"])):
        label = None if labels is None else mnms_to_acdc(labels[..., t], label_path)
        frames[phase] = Frame(phase=phase, index=t + 1, image=cine[..., t], label=label)
    return Subject(id=subject_id, frames=frames, affine=affine, vendor=meta["vendor"], centre=meta["centre"],
                   group=meta["group"], height=meta["height"], weight=meta["weight"], n_frames=n_frames)


def mnms2_entries(root: Path) -> list[tuple[Path, dict]]:
    csv_path = root / MNMS2_CSV
    rows = read_csv_rows(csv_path, MNMS2_REQUIRED, ignore_case=True)
    base = root / "dataset" if (root / "dataset").is_dir() else root
    entries = []
    for row in rows:
        code = row["SUBJECT_CODE"]
        name = f"{int(code):03d}" if code.isdigit() else code
        meta = {"csv": csv_path, "name": name, "vendor": normalise_vendor(row["VENDOR"]),
                "centre": row.get("CENTRE") or "unknown", "group": row.get("DISEASE") or "unknown"}
        entries.append((base / name, meta))
    return entries


def read_mnms2_subject(folder: Path, meta: dict) -> Subject:
    folder = Path(folder)
    subject_id = check_subject_id(meta["name"], meta["csv"])  # before the code becomes a path
    if not folder.is_dir():
        raise InputError(folder, f"subject folder listed in {meta['csv'].name} is missing")
    frames, affine = {}, None
    for index, phase in enumerate(PHASES, start=1):
        image_path = folder / f"{subject_id}_SA_{phase}.nii.gz"
        image, image_affine = load_nifti(image_path)
        if affine is None:
            affine, first = image_affine, image_path
        else:
            check_same_grid(affine, image_affine, first.name, image_path)
        label, label_path = None, folder / f"{subject_id}_SA_{phase}_gt.nii.gz"
        if label_path.exists():
            raw, label_affine = load_nifti(label_path, label=True)
            if raw.shape != image.shape:
                raise InputError(label_path, f"label shape {raw.shape} differs from image shape {image.shape}")
            check_same_grid(image_affine, label_affine, image_path.name, label_path)
            label = mnms_to_acdc(raw, label_path)
        frames[phase] = Frame(phase=phase, index=index, image=image, label=label)
    if frames["ED"].image.shape != frames["ES"].image.shape:
        raise InputError(folder, "ED and ES volumes have different shapes")
    return Subject(id=subject_id, frames=frames, affine=affine, vendor=meta["vendor"], centre=meta["centre"],
                   group=meta["group"], extra={"frame_numbers": "not published by M&Ms-2; ED=1, ES=2 by convention"})
