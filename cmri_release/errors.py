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
