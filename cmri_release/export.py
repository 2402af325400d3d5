"""Atomic export of a release folder: it appears whole, or not at all, and holds the files that were audited.

Everything (`data/`, `dicom/`, `datasheet.html`, `manifest.json`) is written into a hidden
temporary folder beside the target (same file system, so the final `os.rename` is atomic): the
release gate stages `data/` there first, reads it back through the user's reader and audits what
it read (`staged_release`), then publishes; every file and folder is fsynced, and only then is the
folder renamed into place. Any exception, at any step, removes the temporary folder and
propagates: no half release is ever visible under the target's name. An existing target is never
overwritten, and nothing is exported unless the verdict is "pass" with every check passed (the
gate decides; this module double-checks).

`verify_manifest(folder)` recomputes every file's SHA-256 and size and lists what differs,
including files that were added, removed or renamed.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from . import __version__
from .core.cohort import Cohort
from .dicom_export import write_dicom_release
from .core.errors import CmriError, InputError
from .core.fs import _umask, package_versions, partial_prefix, sha256_file, sweep_partials
from .core import fs
from .exports import EXPORTERS, NEEDS, SYNTHETIC_MARK, write_formats
from .io import write_cohort
from .reporting.datasheet import build_datasheet, render_datasheet

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: an `audit` record (what `cmri-release verify` re-runs)


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


def public_spec(spec: dict) -> dict:
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


def check_formats(formats) -> tuple[str, ...]:
    """The formats to write: 'nifti' always (the labels' home), a format another needs added (dicom-seg ->
    dicom: a SEG references MR images), an unknown one refused."""
    formats = tuple(dict.fromkeys(formats))
    unknown = set(formats) - {"nifti", "dicom", *EXPORTERS}
    if unknown or "nifti" not in formats:
        raise CmriError(f"export formats must include 'nifti' and may add dicom, {', '.join(EXPORTERS)}; got "
                        f"{list(formats)}")
    needed = tuple(NEEDS[f] for f in formats if f in NEEDS and NEEDS[f] not in formats)
    return formats + tuple(dict.fromkeys(needed))


def _refuse_unless_passed(verdict: str, checks: list[dict]) -> None:
    failed = [c.get("name", "?") for c in checks if not c.get("passed") or c.get("verdict", "pass") != "pass"]
    if verdict != "pass" or not checks or failed:
        reason = f"failed checks: {', '.join(failed)}" if failed else f"verdict {verdict!r}" if checks else "no checks"
        raise CmriError(f"refusing to export: the gate did not pass ({reason})")


class Staging:
    """A release being written: a hidden folder beside the target, on the same file system.

    The release writes `data/` here first, reads it back and audits what it reads (`read_data`), and only on a
    pass `publish`es: the datasheet, DICOM (from the same files) and the manifest are added, everything is
    fsynced and the folder is renamed into place. `discard` (also on any exception in `staged_release`) removes
    it: nothing of a blocked or failed run is ever visible under the target's name.
    """

    def __init__(self, out_dir: Path):
        self.target = Path(out_dir).absolute()
        if self.target.exists() or self.target.is_symlink():
            raise CmriError(f"{self.target}: already exists; a release is never overwritten (choose a new folder)")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        sweep_partials(self.target)
        self.path = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=partial_prefix(self.target)))
        os.chmod(self.path, 0o777 & ~_umask())  # mkdtemp makes it private; a release folder is meant to be shared
        self.published = False

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    def write_data(self, cohort: Cohort) -> Path:
        return write_cohort(cohort, self.data_dir, descrip=SYNTHETIC_MARK)

    def read_data(self) -> Cohort:
        """The staged data as a user reads them: through the same reader, from the bytes on disk."""
        from .io import read_cohort

        return read_cohort(self.data_dir)

    def publish(self, cohort: Cohort, spec: dict, verdict: str, checks: list[dict], ledger: dict | None,
                model_card: dict | None, formats=("nifti",), *, seeds: dict | None = None, figures=(),
                collection: dict | None = None, stage_seconds: dict | None = None,
                audit: dict | None = None, clinical: dict | None = None) -> Path:
        """Complete the staged release and rename it into place; returns the release folder.

        `cohort` is the staged data as read back (`read_data`): the datasheet and DICOM describe exactly the
        files that were audited. `audit` is the record `cmri-release verify` re-runs the audit from.
        """
        _refuse_unless_passed(verdict, checks)
        formats = check_formats(formats)
        if "dicom" in formats:
            write_dicom_release(cohort, self.path / "dicom")
        extra = write_formats(cohort, self.path, formats)
        files_summary = {"subjects": len(cohort), "formats": list(formats)}
        where = {"nifti": "data/", "dicom": "dicom/", **{name: sorted({p.parts[0] + ("/" if len(p.parts) > 1 else "")
                                                                       for p in paths}) for name, paths in extra.items()}}
        sheet = build_datasheet(cohort, spec=spec, verdict=verdict, checks=checks, model_card=model_card,
                                ledger=ledger, figures=figures, files=files_summary, collection=collection,
                                clinical=clinical, audit=audit)
        (self.path / "datasheet.html").write_text(render_datasheet(sheet), encoding="utf-8")
        entries = file_entries(self.path)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "tool": {"name": "cmri-release", "version": __version__},
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "verdict": verdict,
            "checks": checks,
            "formats": {name: where[name] for name in formats},  # where each export format lies in the folder
            "spec": public_spec(spec),
            "seeds": dict(seeds or {}),
            "packages": package_versions(),
            "privacy_ledger": ledger or {"dp": False, "unit": "patient"},
            "model_card": model_card or {},
            "audit": dict(audit or {}),
            "stage_seconds": dict(stage_seconds or {}),
            "totals": {"files": len(entries), "bytes": sum(e["bytes"] for e in entries)},
            "files": entries,
        }
        (self.path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n",
                                          encoding="utf-8")
        fs.fsync_tree(self.path)
        if self.target.exists() or self.target.is_symlink():  # appeared while we wrote: still never overwrite
            raise CmriError(f"{self.target}: appeared during the export; a release is never overwritten")
        os.rename(self.path, self.target)
        self.published = True
        fs.fsync_dir(self.target.parent)
        return self.target

    def discard(self) -> None:
        if not self.published:
            shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def staged_release(out_dir: Path) -> Iterator[Staging]:
    """A `Staging` that is removed on leaving unless it was published (a block, an error, a kill signal)."""
    staging = Staging(out_dir)
    try:
        yield staging
    finally:
        staging.discard()


def export_release(out_dir: Path, cohort: Cohort, spec: dict, verdict: str, checks: list[dict], ledger: dict | None,
                   model_card: dict | None, formats=("nifti",), *, seeds: dict | None = None, figures=(),
                   collection: dict | None = None, stage_seconds: dict | None = None,
                   audit: dict | None = None, clinical: dict | None = None) -> Path:
    """Stage and publish in one call (for a cohort whose checks were already run); returns the release folder.

    The release gate itself stages first and audits the staged files (`staged_release`); this is the same
    writer without the audit in between. `spec` is the spec as a dict (`ReleaseSpec.to_dict()`), `checks` the
    gate's checks as dicts, `figures` the audit's Figures (only public ones reach the datasheet).
    """
    _refuse_unless_passed(verdict, checks)
    check_formats(formats)
    with staged_release(out_dir) as staging:
        staging.write_data(cohort)
        return staging.publish(staging.read_data(), spec, verdict, checks, ledger, model_card, formats, seeds=seeds,
                               figures=figures, collection=collection, stage_seconds=stage_seconds, audit=audit, clinical=clinical)


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
