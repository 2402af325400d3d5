"""core.fs: a folder is published whole or not at all, and what killed writers left is swept, only theirs."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cmri_release.core import fs
from cmri_release.core.errors import CmriError


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_the_folder_appears_only_when_the_block_ends(tmp_path):
    target = tmp_path / "out"
    with fs.written_aside(target) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not target.exists() and tmp.parent == tmp_path and tmp.name.startswith(fs.partial_prefix(target))
    assert (target / "a.txt").read_text() == "a" and hidden(tmp_path) == []


def test_an_exception_removes_the_folder_and_propagates(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with fs.written_aside(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("a")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_an_empty_folder_is_taken_a_full_one_never_overwritten(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    with fs.written_aside(target) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (target / "a.txt").is_file()
    with pytest.raises(CmriError, match="never overwritten"):
        with fs.written_aside(target) as tmp:
            (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"] and hidden(tmp_path) == []


def test_replace_swaps_a_folder_whole(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with fs.written_aside(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"] and hidden(tmp_path) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep_removes_partials_of_dead_writers_only(tmp_path):
    target = tmp_path / "out"
    prefix = fs.partial_prefix(target)
    mine = tmp_path / f"{prefix}live"
    dead = tmp_path / prefix.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")
    other_host = tmp_path / ".out.partial-00000000-1-x"
    stranger = tmp_path / ".out.keep"
    for folder in (mine, dead, other_host, stranger):
        folder.mkdir()
        (folder / "f").write_text("x")
    assert fs.sweep_partials(target) == [dead]
    assert hidden(tmp_path) == sorted(p.name for p in (mine, other_host, stranger))


def test_check_output_refuses_a_full_folder_and_an_output_inside_an_input(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CmriError, match="not an empty folder"):
        fs.check_output(tmp_path / "full")
    with pytest.raises(CmriError, match="inside the input DATA"):
        fs.check_output(tmp_path / "data" / "model", {"DATA": tmp_path / "data"})
    fs.check_output(tmp_path / "new", {"DATA": tmp_path / "data"})


def test_sha256_and_package_versions(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert fs.sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    versions = fs.package_versions()
    assert versions["torch"] and versions["python"] and set(fs.PACKAGES) <= set(versions)
    assert fs.package_versions(("no-such-distribution-here",))["no-such-distribution-here"] is None
