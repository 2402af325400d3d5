"""`train`, `synthesize` and `phantom` killed with SIGKILL while they write their output folder: the killed run
leaves only its hidden `.OUT.partial-<host>-<pid>-*` folder (OUT itself never appears half written), and the next
run into the same OUT sweeps it and succeeds.

Each command runs in a real process whose writer is paused right after it wrote its first file, so the kill lands
mid-write every time instead of by chance.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_cli import TINY_TRAIN, env, run_cli
from reliability_data import write_ring_cohort

# Run `cmri-release ARGS` with MODULE:FUNCTION wrapped to say "written" and stall once it has written a file.
PAUSED_CHILD = """
import importlib, sys, time
module_name, name = sys.argv[1].split(":")
module = importlib.import_module(module_name)
real = getattr(module, name)
def paused(*args, **kwargs):
    out = real(*args, **kwargs)
    print("written", flush=True)
    time.sleep(600)
    return out
setattr(module, name, paused)
from cmri_release.cli import main
sys.argv = ["cmri-release", *sys.argv[2:]]
sys.exit(main())
"""


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def kill_mid_write(pause_at: str, *args) -> None:
    child = subprocess.Popen([sys.executable, "-c", PAUSED_CHILD, pause_at, *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env())
    try:
        line = child.stdout.readline()
        while line and line.strip() != "written":
            line = child.stdout.readline()
        assert line.strip() == "written", child.communicate(timeout=60)[1]
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)


def assert_swept_by_the_next_run(out: Path, pause_at: str, *args) -> list[str]:
    """Kill a run mid-write, check what it left, rerun to completion; returns what the killed run had left."""
    kill_mid_write(pause_at, *args)
    left = hidden(out.parent)
    assert not out.exists(), "the output appeared before it was whole"
    assert len(left) == 1 and left[0].startswith(f".{out.name}.partial-"), left
    assert any((out.parent / left[0]).rglob("*")), "the kill did not land mid-write"
    rerun = run_cli(*args)
    assert rerun.exit_code == 0, rerun.stderr
    assert hidden(out.parent) == [], f"the rerun left {hidden(out.parent)}"
    return left


@pytest.mark.slow  # default run under 15 min on a slow 2-core machine (a faster sibling runs there)
def test_killed_train_is_swept_by_the_next_train(tmp_path):
    data = write_ring_cohort(tmp_path / "data", 3)
    out = tmp_path / "models" / "model"
    assert_swept_by_the_next_run(out, "torch:save", "train", data, "--out", out, *TINY_TRAIN)
    assert (out / "model_card.json").is_file() and (out / "weights.pt").is_file()


def test_killed_synthesize_is_swept_by_the_next_synthesize(tmp_path, tiny_model):
    out = tmp_path / "synthetic" / "cohort"
    assert_swept_by_the_next_run(out, "cmri_release.io.acdc:write_subject_folder", "synthesize", tiny_model,
                                 "--out", out, "--subjects", 2, "--quiet")
    assert len([p for p in out.iterdir() if p.is_dir()]) == 2


@pytest.mark.parametrize("existing", ["absent", "empty folder"])
def test_killed_phantom_is_swept_by_the_next_phantom(tmp_path, existing):
    out = tmp_path / "phantoms" / "cohort"
    if existing == "empty folder":
        out.mkdir(parents=True)
    kill_mid_write("cmri_release.io.acdc:write_subject_folder", "phantom", out, "--subjects", 2, "--quiet")
    assert hidden(out.parent) and (out.exists() == (existing == "empty folder"))
    assert out.exists() is False or not any(out.iterdir()), "the killed run wrote into OUT itself"
    rerun = run_cli("phantom", out, "--subjects", 2, "--quiet")
    assert rerun.exit_code == 0, rerun.stderr
    assert hidden(out.parent) == [] and len(list(out.iterdir())) == 2
