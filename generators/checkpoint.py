"""The model folder: write it whole, read it only after checking every file.

    MODEL/config.json      {"format", "generator", "config": constructor settings, "fitted": vendors, size, preprocess}
    MODEL/weights.pt       a plain state dict (torch.save), read with torch.load(weights_only=True)
    MODEL/masks.json       the mask generator's state (JSON numbers only), or null
    MODEL/vendors.json     per-vendor aggregate statistics synthesize needs (intensity mapping, thickness)
    MODEL/model_card.json  what the model is and was trained on, with the sha256 of each file above

Loading refuses, with `ModelFolderError(file, problem)` and before anything in the folder is unpickled or run: a
missing file, a file whose sha256 differs from the card's, an unknown generator or setting, weights that are not a
torch zip archive; the weights are then unpickled with `weights_only=True`, which only rebuilds tensors (a pickle
that would run code is refused, not run), and must fit the network exactly. The checksums catch accidents and
casual swaps; `weights_only` is what stops a crafted file, since whoever can replace the weights can rewrite the card.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from cmri_release.core.fs import check_output, sha256_file, written_aside
from cmri_release.core.errors import ModelFolderError

from .base import GENERATORS
from .masks import MaskModel

FORMAT = 1
CONFIG, WEIGHTS, MASKS, VENDORS, CARD = "config.json", "weights.pt", "masks.json", "vendors.json", "model_card.json"
CHECKSUMMED = (CONFIG, WEIGHTS, MASKS, VENDORS)
MAX_JSON_BYTES = 64 * 1024 * 1024
ZIP_MAGIC = b"PK\x03\x04"


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def save_generator(gen, folder: Path) -> None:
    gen._require_fitted()
    check_output(folder)
    with written_aside(folder) as tmp:
        _write_json(tmp / CONFIG, {"format": FORMAT, "generator": gen.name, "config": gen.config,
                                   "fitted": gen.fitted_state()})
        torch.save(gen.state_dict(), tmp / WEIGHTS)
        _write_json(tmp / MASKS, gen.mask_model.to_dict() if gen.mask_model is not None else None)
        _write_json(tmp / VENDORS, gen.vendor_stats)
        card = {**gen.model_card, "format": FORMAT,
                "checksums": {name: sha256_file(tmp / name) for name in CHECKSUMMED}}
        _write_json(tmp / CARD, card)


def _regular_file(folder: Path, name: str) -> Path:
    path = folder / name
    if path.is_symlink() or not path.is_file():
        raise ModelFolderError(path, "missing (or not a regular file): not a complete model folder")
    return path


def _read_json(path: Path):
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ModelFolderError(path, f"larger than {MAX_JSON_BYTES >> 20} MiB")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(path, f"not valid JSON ({exc})") from None


def read_card(folder: Path) -> dict:
    """The model card after checking that every file it lists still has its recorded sha256."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(folder, "not a model folder (no such folder)")
    card_path = _regular_file(folder, CARD)
    card = _read_json(card_path)
    checksums = card.get("checksums") if isinstance(card, dict) else None
    if not isinstance(checksums, dict) or set(checksums) != set(CHECKSUMMED):
        raise ModelFolderError(card_path, f"no 'checksums' entry for exactly {', '.join(CHECKSUMMED)}")
    if card.get("format") != FORMAT:
        raise ModelFolderError(card_path, f"model folder format {card.get('format')!r}; this version reads {FORMAT}")
    for name in CHECKSUMMED:
        path = _regular_file(folder, name)
        if sha256_file(path) != checksums[name]:
            raise ModelFolderError(path, "sha256 differs from the one in model_card.json: the file was replaced or "
                                         "modified; refusing to load it")
    return card


def _unpickler_reason(exc: Exception) -> str:
    """The line of torch's refusal that says what the file holds (e.g. `Unsupported global: GLOBAL exec`), without
    its terminal colour codes or its advice on how to load the file unsafely anyway."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(exc).__name__]
    reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0])
    return reason.split(". Please use")[0][:200]


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    with open(path, "rb") as fh:
        if fh.read(4) != ZIP_MAGIC:
            raise ModelFolderError(path, "not a torch zip archive of tensors; refusing to unpickle it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any refusal of the safe unpickler is a bad folder
        raise ModelFolderError(path, f"refused by the weights-only loader (it holds more than tensors): "
                                     f"{_unpickler_reason(exc)}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelFolderError(path, "not a state dict (a mapping of names to tensors)")
    return state


def load_generator(folder: Path, device: str = "cpu"):
    """Rebuild a generator from a model folder written by `save_generator`, refusing anything else."""
    folder = Path(folder)
    card = read_card(folder)
    config_path = folder / CONFIG
    config = _read_json(config_path)
    if not isinstance(config, dict) or not {"generator", "config", "fitted"} <= set(config):
        raise ModelFolderError(config_path, "needs the keys 'generator', 'config' and 'fitted'")
    name = config["generator"]
    if name not in GENERATORS:
        raise ModelFolderError(config_path, f"unknown generator {name!r}; known: {', '.join(sorted(GENERATORS))}")
    try:
        gen = GENERATORS[name](**config["config"])
    except (TypeError, ValueError) as exc:
        raise ModelFolderError(config_path, f"bad settings: {exc}") from None
    fitted = config["fitted"]
    if not isinstance(fitted, dict) or not isinstance(fitted.get("vendors"), list) \
            or not isinstance(fitted.get("image_size"), int):
        raise ModelFolderError(config_path, "'fitted' needs a vendor list and an integer image_size")
    state = _load_weights(folder / WEIGHTS)
    masks_state = _read_json(folder / MASKS)
    try:
        mask_model = None if masks_state is None else MaskModel.from_dict(masks_state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFolderError(folder / MASKS, f"not a usable mask model: {exc}") from None
    vendor_stats = _read_json(folder / VENDORS)
    if not isinstance(vendor_stats, dict) or not isinstance(vendor_stats.get("vendors"), dict):
        raise ModelFolderError(folder / VENDORS, "needs a 'vendors' mapping")
    try:
        gen.restore(fitted, state, mask_model, vendor_stats, card, device=device)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelFolderError(folder / WEIGHTS, f"do not fit the network described in {CONFIG}: {first[:200]}") \
            from None
    return gen
