"""File-system helpers every layer needs: publish a folder whole or not at all, hash a file, refuse an output
inside an input, record package versions.

`written_aside(target)` is the one way a folder is published (model folders, synthetic and phantom cohorts, audit
folders, releases): everything is written into a hidden folder beside the target (same file system, so the final
`os.rename` is atomic), every file and folder is fsynced, and only then is the folder renamed into place. An
exception at any step removes the hidden folder. A writer killed with SIGKILL cannot clean up: its folder carries
this host and the writer's pid in its name, and the next writer of the same target sweeps it once that pid is gone.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import socket
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Iterator

from .errors import CmriError

PACKAGES = ("cmri-release", "torch", "opacus", "faiss-cpu", "numpy", "scipy", "scikit-learn", "nibabel", "pydicom",
            "jinja2", "matplotlib", "click")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Python's version and each installed distribution's (None when absent), for manifests and model cards."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_outside_inputs(out: Path, inputs: dict) -> None:
    """Refuse an output that is, or lies inside, an input folder ({name: path or None}): a model or a report
    written into a cohort becomes a broken subject of it, and real data is never written to."""
    target = Path(out).resolve()
    for name, path in inputs.items():
        if path is not None and target.is_relative_to(Path(path).resolve()):
            raise CmriError(f"{out}: inside the input {name} ({path}); write outputs outside every input folder")


def check_output(folder: Path, inputs: dict | None = None) -> None:
    """An output folder must not exist yet, or be empty: nothing is ever overwritten; nor lie inside an input."""
    folder = Path(folder)
    if folder.is_symlink() or folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise CmriError(f"{folder}: exists and is not an empty folder; choose a new output path")
    check_outside_inputs(folder, inputs or {})


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def partial_prefix(target: Path) -> str:
    """Name prefix of the hidden folder `target` is written in before its rename: it carries this host and
    process, so a later run can tell a folder whose writer was killed from one still being written."""
    return f".{Path(target).name}.partial-{_host_tag()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_partials(target: Path) -> list[Path]:
    """Remove the hidden partial folders of `target` left by a writer on this host that no longer runs (killed
    with SIGKILL, or the machine lost power): they hold half an output, never to be published. Returns them."""
    target = Path(target)
    stem = f".{target.name}.partial-{_host_tag()}-"
    removed = []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.iterdir():
        pid = path.name[len(stem):].split("-", 1)[0] if path.name.startswith(stem) else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder to disk, so the rename never exposes a folder whose content is not there."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _rename_into_place(tmp: Path, target: Path, replace: bool) -> None:
    if target.is_symlink() or target.exists():
        if replace and target.is_dir() and not target.is_symlink():
            old = target.with_name(f"{partial_prefix(target)}old")  # swept by the next writer if we die here
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
            return
        if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
            target.rmdir()  # an empty folder made for us; rename cannot replace a folder on every platform
        else:
            raise CmriError(f"{target}: appeared while it was being written; an output is never overwritten")
    os.rename(tmp, target)


@contextlib.contextmanager
def written_aside(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh hidden folder beside `target` to write into; when the block ends cleanly, fsync it and rename
    it to `target`. On any exception the folder is removed and the exception propagates.

    Leftovers of earlier writers of `target` that were killed are swept first. `target` may be absent or an empty
    folder; with `replace=True` an existing folder is replaced whole (the caller has checked it holds only its own
    earlier output).
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=partial_prefix(target)))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; an output folder is meant to be shared
        yield tmp
        fsync_tree(tmp)
        _rename_into_place(tmp, target, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)
