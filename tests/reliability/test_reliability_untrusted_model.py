"""A model folder is untrusted input: a pickle that would run code is refused, never run, by every command.

The payload's `__reduce__` writes a marker file when unpickled. A plain `torch.load(weights_only=False)` of the
same file does write it (so the attack is real); `synthesize`, `audit --model` and `release` with a loaded model
must exit 2 with one line naming weights.pt, write nothing, and the marker must never appear. The attacker is
assumed able to rewrite model_card.json too (the checksums catch accidents, not attacks), so the card is updated.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from cmri_release.core.fs import sha256_file
from generators.checkpoint import CARD, WEIGHTS
from reliability_cli import invoke, run_cli, tree
from reliability_data import write_ring_cohort, write_spec


class Payload:
    """Unpickling this runs `exec`, which writes `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def plant(model: Path, weights: bytes | None = None, *, update_card: bool = True) -> Path:
    """Replace the weights with `weights` (the file written by `torch.save` when None) and re-sign the card."""
    if weights is not None:
        (model / WEIGHTS).write_bytes(weights)
    if update_card:
        card = json.loads((model / CARD).read_text())
        card["checksums"][WEIGHTS] = sha256_file(model / WEIGHTS)
        (model / CARD).write_text(json.dumps(card))
    return model / WEIGHTS


def evil_folder(tiny_model: Path, root: Path, kind: str, marker: Path) -> Path:
    model = root / "evil_model"
    shutil.copytree(tiny_model, model)
    state = torch.load(model / WEIGHTS, weights_only=True)
    if kind == "torch zip with a code payload":
        state["payload"] = Payload(marker)
        torch.save(state, model / WEIGHTS)
        plant(model)
    elif kind == "raw pickle":
        plant(model, pickle.dumps({"payload": Payload(marker)}))
    elif kind == "card not re-signed":
        state["payload"] = Payload(marker)
        torch.save(state, model / WEIGHTS)
    return model


KINDS = {"torch zip with a code payload": "refused by the weights-only loader (it holds more than tensors): "
                                          "WeightsUnpickler error: Unsupported global: GLOBAL exec",
         "raw pickle": "not a torch zip archive of tensors; refusing to unpickle it",
         "card not re-signed": "sha256 differs from the one in model_card.json"}


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cohorts")
    return {"train": write_ring_cohort(root / "train", 4), "holdout": write_ring_cohort(root / "holdout", 2, "h", 10),
            "synthetic": write_ring_cohort(root / "syn", 2, "s", 20)}


def test_the_payload_runs_when_loaded_unsafely(tiny_model, tmp_path):
    marker = tmp_path / "marker"
    model = evil_folder(tiny_model, tmp_path, "torch zip with a code payload", marker)
    torch.load(model / WEIGHTS, weights_only=False)
    assert marker.read_text() == "code ran"


def _commands(model: Path, cohorts: dict, out: Path) -> dict[str, list]:
    spec = write_spec(out.parent, f"""[data]
size = 16
train = "{cohorts['train']}"
holdout = "{cohorts['holdout']}"
[generator]
model = "{model}"
[synthesis]
subjects = 1
[audit]
groups = ["privacy"]
[export]
out = "{out / 'release'}"
""")
    return {
        "synthesize": ["synthesize", model, "--out", out / "synthetic", "--subjects", "1", "--quiet"],
        "audit --model": ["audit", "--train", cohorts["train"], "--holdout", cohorts["holdout"], "--synthetic",
                          cohorts["synthetic"], "--model", model, "--only", "privacy", "--out", out / "audit",
                          "--quiet"],
        "release": ["release", spec, "--quiet"],
    }


@pytest.mark.parametrize("command", ["synthesize", "audit --model", "release"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_model_folder_that_holds_code_is_refused(kind, command, tiny_model, cohorts, tmp_path):
    marker = tmp_path / "marker"
    model = evil_folder(tiny_model, tmp_path, kind, marker)
    args = _commands(model, cohorts, tmp_path / "out")[command]
    before = tree(tmp_path)
    ran = invoke(*args)
    assert ran.exception is None and ran.exit_code == 2, (ran.stdout, ran.stderr)
    assert len(ran.error_lines) == 1 and "Traceback" not in ran.stdout + ran.stderr, ran.stderr
    assert f"{model / WEIGHTS}: {KINDS[kind]}" in ran.error_lines[0]
    assert "\x1b" not in ran.stderr and "trust" not in ran.stderr  # no terminal codes, no advice to load it anyway
    assert not marker.exists(), "the pickle ran"
    assert tree(tmp_path) == before


def test_a_real_process_refuses_it_even_when_the_environment_asks_torch_for_unsafe_loading(tiny_model, tmp_path,
                                                                                           monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns unsafe loading on for callers that do not say weights_only;
    the model loader says it explicitly, so the variable must change nothing."""
    marker = tmp_path / "marker"
    model = evil_folder(tiny_model, tmp_path, "torch zip with a code payload", marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    ran = run_cli("synthesize", model, "--out", tmp_path / "synthetic", "--subjects", "1", "--quiet")
    assert ran.exit_code == 2 and len(ran.error_lines) == 1, ran.stderr
    assert "refused by the weights-only loader" in ran.stderr and "Traceback" not in ran.stderr
    assert not marker.exists() and not (tmp_path / "synthetic").exists()
