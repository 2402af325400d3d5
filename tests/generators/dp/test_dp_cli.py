"""`cmri-release train --dp` through click: a DP model folder with its ledger, and refusals on one line (exit 2)."""
from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from torch import nn

from cmri_release.cli import _Group
from cmri_release.commands.train_cmd import train_command
from cmri_release.io import write_cohort
from generators.flow import FlowMatching

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook", "ignore:Secure RNG turned off")


@click.group(cls=_Group)
def cli():
    """train under the project's error handling."""


cli.add_command(train_command)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def data(tiny_cohort, tmp_path):
    """The shared 6-subject test cohort (tests/conftest.py) on disk."""
    folder = tmp_path / "data"
    write_cohort(tiny_cohort, folder)
    return folder


TRAIN = ("--generator", "flow", "--epochs", 1, "--size", 32, "--network", "tiny", "--quiet")


def test_dp_training_writes_the_ledger(data, tmp_path):
    result = run("train", data, "--out", tmp_path / "m", *TRAIN, "--dp", "--epsilon", 5, "--accountant", "rdp")
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    ledger = card["privacy"]
    assert ledger["dp"] is True and ledger["unit"] == "patient" and ledger["accountant"] == "rdp"
    assert ledger["delta"] == pytest.approx(1 / 60) and 4.75 <= ledger["epsilon"] <= 5.0
    assert f"privacy: epsilon {ledger['epsilon']:.3g} per patient" in result.output


def test_dp_on_a_network_with_batchnorm_fails_at_once_with_the_fix(data, tmp_path, monkeypatch):
    build = FlowMatching._build

    def with_batchnorm(self, n_vendors):
        build(self, n_vendors)
        self.net.stem = nn.Sequential(self.net.stem, nn.BatchNorm2d(self.net.stem.out_channels))

    monkeypatch.setattr(FlowMatching, "_build", with_batchnorm)
    result = run("train", data, "--out", tmp_path / "m", *TRAIN, "--dp", "--epsilon", 5)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: generator 'flow' cannot be trained with differential privacy: net.stem.1 (BatchNorm2d)")
    assert "GroupNorm" in lines[0]
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("args, message", [
    (("--dp",), "--dp needs --epsilon"),
    (("--epsilon", 3), "--epsilon only apply with --dp"),
    (("--dp", "--epsilon", 3, "--delta", 0.5), "delta 0.5 is above 1 / (10 x 6 training patients)"),
])
def test_bad_dp_requests_are_refused(data, tmp_path, args, message):
    result = run("train", data, "--out", tmp_path / "m", *TRAIN, *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_dp_needs_epochs(data, tmp_path):
    result = run("train", data, "--out", tmp_path / "m", "--generator", "flow", "--minutes", 1, "--dp",
                 "--epsilon", 3)
    assert result.exit_code == 2 and "--dp needs --epochs" in result.output
