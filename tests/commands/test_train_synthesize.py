"""`train` and `synthesize` end to end through click (tiny: 32 px, 1 epoch, the test cohort of tests/conftest.py)."""
from __future__ import annotations

import os

import click
import numpy as np
import pytest
from click.testing import CliRunner

from cmri_release.cli import _Group
from cmri_release.core.cohort import Cohort, Frame, Subject
from cmri_release.commands.synthesize_cmd import synthesize_command
from cmri_release.commands.train_cmd import train_command
from cmri_release.inspect import inspect_cohort
from cmri_release.io import read_cohort, write_cohort


@click.group(cls=_Group)
def cli():
    """The two commands under the project's error handling (one line, exit 2)."""


cli.add_command(train_command)
cli.add_command(synthesize_command)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ring_subject(subject_id: str, vendor: str, seed: int):
    """LV cavity in a myocardium ring with an RV beside it, shrinking to the apex, smaller at ES."""
    rng = np.random.default_rng(seed)
    shape = (80, 80, 5)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    cx, cy = 40 + rng.integers(-3, 4), 40 + rng.integers(-3, 4)
    frames = {}
    for phase, index, scale in (("ED", 1, 1.0), ("ES", 10, 0.75)):
        label = np.zeros(shape, np.uint8)
        for z in range(shape[2]):
            r = (16 - 2 * z) * scale
            d = np.hypot(x - cx, y - cy)
            label[..., z][np.hypot(x - cx, y - (cy - 1.8 * r)) < r * 0.9] = 1
            label[..., z][d < r + 5] = 2
            label[..., z][d < r] = 3
        image = np.choose(label, [40.0, 280.0, 90.0, 300.0]).astype(np.float32) + rng.normal(0, 10, shape)
        frames[phase] = Frame(phase, index, image.astype(np.float32), label)
    return Subject(id=subject_id, frames=frames, affine=np.diag([2.0, 2.0, 8.0, 1.0]), vendor=vendor, centre="C1",
                   group=("NOR", "DCM")[seed % 2], height=170.0, weight=70.0, n_frames=25)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    write_cohort(Cohort([ring_subject(f"pt{i:02d}", vendor="AB"[i % 2], seed=i) for i in range(6)]), data)
    model = root / "model"
    result = run("train", data, "--generator", "flow", "--out", model, "--epochs", 1, "--size", 32, "--seed", 1,
                 "--network", "tiny", "--quiet")
    assert result.exit_code == 0, result.output
    return data, model, result.output


def test_train_writes_a_model_folder(trained):
    _, model, output = trained
    assert sorted(os.listdir(model)) == ["config.json", "masks.json", "model_card.json", "vendors.json", "weights.pt"]
    assert "trained flow on 6 subjects" in output


def test_synthesize_writes_a_cohort_inspect_accepts(trained, tmp_path):
    data, model, _ = trained
    out = tmp_path / "syn"
    result = run("synthesize", model, "--out", out, "--subjects", 3, "--seed", 7, "--quiet")
    assert result.exit_code == 0, result.output
    cohort = read_cohort(out)
    assert cohort.ids == ["syn-7-0001", "syn-7-0002", "syn-7-0003"]
    real_ids = read_cohort(data).ids
    for subject in cohort:
        assert subject.has_labels and set(subject.frames) == {"ED", "ES"}
        assert subject.vendor in {"A", "B"} and subject.centre == "synthetic"
        assert not any(r in subject.id for r in real_ids)
    report = inspect_cohort(out)
    assert report["usable"], report["problems"]
    assert report["n_subjects"] == 3


def test_synthesize_from_given_masks_and_vendor(trained, tmp_path):
    data, model, _ = trained
    out = tmp_path / "syn"
    result = run("synthesize", model, "--out", out, "--subjects", 2, "--masks", data, "--vendors", "B", "--quiet")
    assert result.exit_code == 0, result.output
    cohort = read_cohort(out)
    assert cohort.ids == ["syn-0-0001", "syn-0-0002"]
    assert {s.vendor for s in cohort} == {"B"}


def test_synthesize_refuses_an_unknown_vendor_and_too_many_masks(trained, tmp_path):
    data, model, _ = trained
    result = run("synthesize", model, "--out", tmp_path / "a", "--subjects", 2, "--vendors", "Z", "--quiet")
    assert result.exit_code == 2 and "vendor(s) Z not in this model" in result.output
    result = run("synthesize", model, "--out", tmp_path / "b", "--subjects", 9, "--masks", data, "--quiet")
    assert result.exit_code == 2 and "holds 6 subjects" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_outputs_are_never_overwritten(trained, tmp_path):
    data, model, _ = trained
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    result = run("synthesize", model, "--out", taken, "--subjects", 1, "--quiet")
    assert result.exit_code == 2 and "exists and is not an empty folder" in result.output
    result = run("train", data, "--out", taken, "--epochs", 1, "--size", 32, "--quiet")
    assert result.exit_code == 2 and "exists and is not an empty folder" in result.output
    assert os.listdir(taken) == ["keep.txt"]


def test_a_tampered_model_is_refused_with_one_line(trained, tmp_path):
    import shutil
    _, model, _ = trained
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    with open(copy / "weights.pt", "ab") as fh:
        fh.write(b"\0")
    result = run("synthesize", copy, "--out", tmp_path / "syn", "--subjects", 1, "--quiet")
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "weights.pt: sha256 differs" in result.output and "Traceback" not in result.output


def test_train_usage_errors(trained, tmp_path):
    data, _, _ = trained
    result = run("train", data, "--out", tmp_path / "m", "--epochs", 1, "--minutes", 1)
    assert result.exit_code == 2 and "not both" in result.output
    result = run("train", data, "--out", tmp_path / "m", "--generator", "nope")
    assert result.exit_code == 2
    result = run("train", tmp_path / "absent", "--out", tmp_path / "m", "--epochs", 1, "--quiet")
    assert result.exit_code == 2 and "absent" in result.output
