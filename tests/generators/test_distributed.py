"""Patient sharding for data-parallel training, and `torchrun ... cmri-release train` end to end (slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generators.distributed import DistContext, ShardedPatientBatches, local_batch_size


def test_each_epoch_splits_patients_between_ranks_in_equal_steps():
    patient = np.repeat(np.arange(10), [3, 5, 2, 4, 6, 3, 3, 2, 5, 7])
    shards = [ShardedPatientBatches(patient, 8, DistContext(rank=r, world_size=2, backend="gloo"), seed=3)
              for r in range(2)]
    for _ in range(2):  # a new split each epoch, the same on both ranks
        epochs = [list(s) for s in shards]
        assert len(epochs[0]) == len(epochs[1]) == -(-len(patient) // 8)
        assert all(len(b) == 4 for e in epochs for b in e)
        owners = [set(patient[np.concatenate(e)]) for e in epochs]
        assert not owners[0] & owners[1]  # a patient's slices on one rank only


def test_a_batch_smaller_than_the_processes_is_refused():
    with pytest.raises(ValueError, match="batch size 1 is smaller than the 2 processes"):
        local_batch_size(1, 2)


def _torchrun(tmp: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    entry = Path(sys.executable).with_name("cmri-release")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(torchrun), "--standalone", f"--nproc_per_node={nproc}", str(entry), *args],
                          capture_output=True, text=True, env=env, cwd=tmp, timeout=600)


@pytest.mark.slow
def test_torchrun_trains_one_model_folder_that_synthesize_reads(tmp_path):
    from click.testing import CliRunner

    from cmri_release.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["phantom", str(tmp_path / "data"), "--subjects", "8", "--seed", "1"]).exit_code == 0
    for name, extra in (("M", []), ("MDP", ["--dp", "--epsilon", "3"])):
        run = _torchrun(tmp_path, "train", str(tmp_path / "data"), "--generator", "flow", "--epochs", "1",
                        "--size", "32", "--network", "tiny", "--quiet", "--out", str(tmp_path / name), *extra)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.count("trained flow") == 1  # rank 0 alone reports
        card = json.loads((tmp_path / name / "model_card.json").read_text())
        assert card["training"]["world_size"] == 2 and card["training"]["backend"] == "gloo"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}")] == []  # no leftovers
    assert card["privacy"]["dp"] and card["privacy"]["epsilon"] <= 3.0
    out = runner.invoke(main, ["synthesize", str(tmp_path / "M"), "--out", str(tmp_path / "S"), "--subjects", "2",
                               "--quiet"])
    assert out.exit_code == 0, out.output
