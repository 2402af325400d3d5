"""Errors the command line turns into one-line messages and exit code 2.

Anything a user can fix (a bad file, a bad spec, a bad argument) raises a subclass of
`CmriError`; the CLI prints `error: <message>` and exits 2 without a traceback.
"""
from __future__ import annotations

from pathlib import Path


class CmriError(Exception):
    """A problem the user can act on; the CLI prints it on one line and exits 2."""

    exit_code = 2


class InputError(CmriError):
    """A file or folder that cannot be used, named in the message."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class SpecError(CmriError):
    """A release spec or thresholds file with a wrong key, type or value."""


class ModelFolderError(InputError):
    """A model folder that is missing files, was tampered with, or holds code."""


def one_line(text: str, limit: int = 500) -> str:
    """Fold a message onto one line (a CI log reads one line per error)."""
    return " ".join(str(text).split())[:limit]


def describe_unexpected(exc: BaseException) -> str:
    """One line for an unexpected error: its root cause and where it was raised.

    Libraries wrap errors in multi-line messages (pydicom appends a whole traceback to a failed
    write); the cause is what a user can act on, e.g. `OSError: [Errno 28] No space left on device`.
    """
    import traceback

    root, seen = exc, set()
    while root.__cause__ is not None and id(root) not in seen:
        seen.add(id(root))
        root = root.__cause__
    frames = traceback.extract_tb(root.__traceback__) or traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"unexpected {type(root).__name__}: {one_line(root, 300)}{where}"
