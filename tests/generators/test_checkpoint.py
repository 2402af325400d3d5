"""The model folder is refused, before anything in it runs, when a file is missing, altered or replaced."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch

from cmri_release.core.errors import CmriError, ModelFolderError
from generators import create_generator, load_generator
from cmri_release.core.fs import sha256_file
from generators.checkpoint import CARD, CHECKSUMMED


@pytest.fixture(scope="module")
def saved(toy_train, tmp_path_factory):
    gen = create_generator("flow", network="tiny", batch_size=8, steps=2)
    gen.fit(toy_train, epochs=1, quiet=True)
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    gen.save(folder)
    return folder


@pytest.fixture
def copy_of(saved, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(saved, target)
    return target


def _rewrite_card_checksums(folder):
    """What an attacker who can write the folder would do: make the card agree with the replaced files."""
    card = json.loads((folder / CARD).read_text())
    card["checksums"] = {name: sha256_file(folder / name) for name in CHECKSUMMED}
    (folder / CARD).write_text(json.dumps(card))


class CreatesAFile:
    """Unpickling this calls open(marker, 'w'): a stand-in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_saved_folder_loads(saved):
    assert load_generator(saved).name == "flow"


def test_tampered_weights_are_refused(copy_of):
    data = bytearray((copy_of / "weights.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy_of / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=r"weights\.pt: sha256 differs"):
        load_generator(copy_of)


def test_weights_of_another_model_are_refused(copy_of):
    state = torch.load(copy_of / "weights.pt", weights_only=True)
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, copy_of / "weights.pt")
    with pytest.raises(ModelFolderError, match="sha256 differs"):
        load_generator(copy_of)


@pytest.mark.parametrize("how", ["plain pickle", "torch.save"])
def test_a_pickle_that_runs_code_is_refused_and_never_runs(copy_of, tmp_path, how):
    marker = tmp_path / "pwned"
    payload = {"net.stem.weight": CreatesAFile(marker)}
    if how == "plain pickle":
        with open(copy_of / "weights.pt", "wb") as fh:
            pickle.dump(payload, fh)
    else:
        torch.save(payload, copy_of / "weights.pt")
    _rewrite_card_checksums(copy_of)
    with pytest.raises(ModelFolderError, match=r"weights\.pt: (not a torch zip archive|refused by the weights-only)"):
        load_generator(copy_of)
    assert not marker.exists()


def test_weights_that_do_not_fit_the_network_are_refused(copy_of):
    state = torch.load(copy_of / "weights.pt", weights_only=True)
    state["net.stem.weight"] = torch.zeros(3, 3)
    torch.save(state, copy_of / "weights.pt")
    _rewrite_card_checksums(copy_of)
    with pytest.raises(ModelFolderError, match="do not fit the network"):
        load_generator(copy_of)


@pytest.mark.parametrize("name", ["config.json", "weights.pt", "masks.json", "vendors.json", "model_card.json"])
def test_a_missing_file_is_refused(copy_of, name):
    (copy_of / name).unlink()
    with pytest.raises(ModelFolderError, match=f"{name}: missing"):
        load_generator(copy_of)


def test_unknown_generator_or_setting_in_config_is_refused(copy_of):
    config = json.loads((copy_of / "config.json").read_text())
    (copy_of / "config.json").write_text(json.dumps({**config, "generator": "evil"}))
    _rewrite_card_checksums(copy_of)
    with pytest.raises(ModelFolderError, match="unknown generator 'evil'"):
        load_generator(copy_of)
    (copy_of / "config.json").write_text(json.dumps({**config, "config": {**config["config"], "x": 1}}))
    _rewrite_card_checksums(copy_of)
    with pytest.raises(ModelFolderError, match="bad settings: unknown setting"):
        load_generator(copy_of)


def test_a_card_without_checksums_or_not_json_is_refused(copy_of):
    card = json.loads((copy_of / CARD).read_text())
    del card["checksums"]
    (copy_of / CARD).write_text(json.dumps(card))
    with pytest.raises(ModelFolderError, match="checksums"):
        load_generator(copy_of)
    (copy_of / CARD).write_bytes(b"\x80\x04not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        load_generator(copy_of)


def test_not_a_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="no such folder"):
        load_generator(tmp_path / "absent")


def test_save_never_overwrites(saved, toy_train, tmp_path):
    gen = load_generator(saved)
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(CmriError, match="exists and is not an empty folder"):
        gen.save(target)
    assert os.listdir(target) == ["keep.txt"]
    gen.save(tmp_path / "fresh")  # an absent folder is fine, and nothing is left beside it
    assert sorted(os.listdir(tmp_path)) == ["fresh", "taken"]
