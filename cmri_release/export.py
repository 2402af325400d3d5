"""Atomic export of a release folder: it appears whole, or not at all.

Everything (`data/`, `dicom/`, `datasheet.html`, `manifest.json`) is written aside and renamed into
place by `core.fs.written_aside` (fsynced; removed on any exception; swept after a SIGKILL): no half
release is ever visible under the target's name. An existing target is never overwritten, and nothing
is exported unless the verdict is "pass" with every check passed (the gate decides; this module
double-checks).

`verify_manifest(folder)` recomputes every file's SHA-256 and size and lists what differs,
including files that were added, removed or renamed.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path, PurePosixPath

from . import __version__
from .core.cohort import Cohort
from .core.fs import package_versions, sha256_file, written_aside
from .dicom_export import write_dicom_release
from .core.errors import CmriError, InputError
from .io import write_cohort
from .reporting.datasheet import build_datasheet, render_datasheet

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def _files(root: Path) -> list[Path]:
    """Every regular file under root, sorted, as paths relative to root (symlinks are refused)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                raise CmriError(f"{path}: not a regular file; a release holds plain files only")
            out.append(path.relative_to(root))
    return out


def file_entries(root: Path) -> list[dict]:
    return [{"path": rel.as_posix(), "sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
            for rel in _files(root) if rel.as_posix() != MANIFEST]


def _public_spec(spec: dict) -> dict:
    """The spec for the public manifest: input folders by name only (a full path may name a site or a person)."""
    out = json.loads(json.dumps(spec))
    data = out.get("data", {})
    for key in ("train", "holdout", "test", "cohort"):
        if data.get(key):
            data[key] = Path(data[key]).name
    generator = out.get("generator", {})
    if generator.get("model"):
        generator["model"] = Path(generator["model"]).name
    export = out.get("export", {})
    for key in ("out", "audit_dir"):
        if export.get(key):
            export[key] = Path(export[key]).name
    return out


def _refuse_unless_passed(verdict: str, checks: list[dict]) -> None:
    failed = [c.get("name", "?") for c in checks if not c.get("passed") or c.get("verdict", "pass") != "pass"]
    if verdict != "pass" or not checks or failed:
        reason = f"failed checks: {', '.join(failed)}" if failed else f"verdict {verdict!r}" if checks else "no checks"
        raise CmriError(f"refusing to export: the gate did not pass ({reason})")


def export_release(out_dir: Path, cohort: Cohort, spec: dict, verdict: str, checks: list[dict], ledger: dict | None,
                   model_card: dict | None, formats=("nifti",), *, seeds: dict | None = None, figures=(),
                   collection: dict | None = None, stage_seconds: dict | None = None) -> Path:
    """Write the release folder atomically and return its path.

    `spec` is the spec as a dict (`ReleaseSpec.to_dict()`), `checks` the gate's checks as dicts,
    `figures` the audit's Figures (only public ones reach the datasheet).
    """
    out_dir = Path(out_dir).absolute()
    _refuse_unless_passed(verdict, checks)
    unknown = set(formats) - {"nifti", "dicom"}
    if unknown or "nifti" not in formats:
        raise CmriError(f"export formats must include 'nifti' and may add 'dicom', got {list(formats)}")
    if out_dir.exists() or out_dir.is_symlink():
        raise CmriError(f"{out_dir}: already exists; a release is never overwritten (choose a new folder)")
    with written_aside(out_dir) as tmp:
        write_cohort(cohort, tmp / "data")
        if "dicom" in formats:
            write_dicom_release(cohort, tmp / "dicom")
        files_summary = {"subjects": len(cohort), "formats": list(formats)}
        sheet = build_datasheet(cohort, spec=spec, verdict=verdict, checks=checks, model_card=model_card,
                                ledger=ledger, figures=figures, files=files_summary, collection=collection)
        (tmp / "datasheet.html").write_text(render_datasheet(sheet), encoding="utf-8")
        entries = file_entries(tmp)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "tool": {"name": "cmri-release", "version": __version__},
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "verdict": verdict,
            "checks": checks,
            "spec": _public_spec(spec),
            "seeds": dict(seeds or {}),
            "packages": package_versions(),
            "privacy_ledger": ledger or {"dp": False, "unit": "patient"},
            "model_card": model_card or {},
            "stage_seconds": dict(stage_seconds or {}),
            "totals": {"files": len(entries), "bytes": sum(e["bytes"] for e in entries)},
            "files": entries,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n",
                                    encoding="utf-8")
    return out_dir


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no manifest: not a release folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable manifest ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise InputError(path, "manifest has no 'files' list")
    return manifest


def verify_manifest(folder: Path) -> list[str]:
    """Problems found when checking `folder` against its manifest; an empty list means every file verifies."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    problems, listed = [], set()
    for entry in manifest["files"]:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or not rel or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            problems.append(f"unsafe path in manifest: {rel!r}")
            continue
        listed.add(rel)
        path = folder / rel
        if not path.is_file() or path.is_symlink():
            problems.append(f"{rel}: missing")
            continue
        if path.stat().st_size != entry.get("bytes"):
            problems.append(f"{rel}: size {path.stat().st_size} bytes, manifest says {entry.get('bytes')}")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{rel}: sha256 differs from the manifest (modified)")
    try:
        present = {rel.as_posix() for rel in _files(folder)} - {MANIFEST}
    except CmriError as exc:
        problems.append(str(exc))
        present = set()
    for rel in sorted(present - listed):
        problems.append(f"{rel}: not in the manifest (added)")
    return problems
