"""Running the command line in the reliability suite: in process (click's runner) or as a real process, and
what it left on disk."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from cmri_release.cli import main

TINY_TRAIN = ["--epochs", "1", "--size", "16", "--network", "tiny", "--quiet"]
# The console script, run by the interpreter of this test session (the project's venv).
CLI = [sys.executable, "-c", "import sys; from cmri_release.cli import main; sys.exit(main())"]


@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _warn_to_stderr(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def invoke(*args) -> Ran:
    """`cmri-release ARGS` in process, as a user would run it (exit code, stdout, stderr).

    Warnings are printed on the command's stderr with Python's default filters, as in a real run (pytest would
    otherwise collect them), so that a library warning counts as an extra line on stderr.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.showwarning = _warn_to_stderr
        result = CliRunner().invoke(main, [str(a) for a in args])
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return Ran(result.exit_code, result.stdout, result.stderr, exception)


def env(**extra) -> dict:
    """The environment for a child process: one thread (2 shared cores), no progress bars on a pipe."""
    out = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out.update(extra)
    return out


def run_cli(*args, cwd=None, timeout=300) -> Ran:
    """`cmri-release ARGS` as a separate process."""
    done = subprocess.run([*CLI, *[str(a) for a in args]], capture_output=True, text=True, cwd=cwd, env=env(),
                          timeout=timeout)
    return Ran(done.returncode, done.stdout, done.stderr)


def tree(root: Path) -> dict[str, int]:
    """Every path under root with its size (folders as -1): compared before and after a command."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = -1
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = os.path.getsize(path)
    return out
