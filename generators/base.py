"""The generator interface and its registry.

A generator maps (label map, vendor) to an image in the SliceSet's normalised space. Each
implementation lives in its own module and registers itself by a short name; `create_generator`
fails loudly on an unknown name (no discovery by globbing, no swallowed import errors).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from cmri_release.core.sliceset import SliceSet


@dataclass(frozen=True)
class DPConfig:
    """Patient-level differential privacy settings for training (see generators/dp)."""

    epsilon: float
    delta: float | None = None  # None: 1 / (10 x training patients)
    max_grad_norm: float = 1.0
    accountant: str = "prv"  # "prv" or "rdp"; the ledger reports both, the larger epsilon counts
    secure_mode: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_MINUTES = 3.0  # the CPU training budget when a caller gives neither epochs nor minutes
# Why DP training takes an epoch budget, never minutes alone (the train command and the spec reader say it too).
DP_EPOCHS_REASON = "the noise is calibrated to the number of steps, which a wall-clock budget does not fix"


def require_epoch_budget(privacy: DPConfig | None, epochs: int | None) -> None:
    if privacy is not None and epochs is None:
        raise ValueError(f"DP training needs an epoch budget (epochs): {DP_EPOCHS_REASON}")


class Generator(ABC):
    """Conditional image generator: label map (one-hot) + vendor -> image."""

    name: ClassVar[str]
    # Whether `sample` and `membership_scores` may run in several threads at once on one instance (synthesis then
    # makes subjects side by side, one CPU core each; the white-box attack scores its parts so). Off unless a
    # generator says so: a plug-in's thread safety is not known.
    parallel_sampling: ClassVar[bool] = False

    @abstractmethod
    def fit(self, train: SliceSet, privacy: DPConfig | None = None, *, epochs: int | None = None,
            minutes: float | None = None, device: str = "cpu", seed: int = 0, quiet: bool = False) -> dict:
        """Train on `train` (only its annotated slices); return a training log (losses, steps, time)."""

    @abstractmethod
    def sample(self, labels: np.ndarray, vendors, seed: int, positions=None) -> np.ndarray:
        """(N, H, W) uint8 label maps and N vendor names -> (N, H, W) float32 images; deterministic for a seed.
        `positions` (N integers, optional): each slice's place in one patient's stack (ED and ES slices at one
        place share it), so that a generator can make the stack one body; slices are independent without it."""

    @abstractmethod
    def membership_scores(self, slices: SliceSet, seed: int) -> np.ndarray:
        """White-box membership score per slice (higher = more likely a training member).

        Flow / DDPM: negative denoising loss at several noise levels; VAE: ELBO; GAN: discriminator score.
        """

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write `config.json`, a state dict and `model_card.json` into `folder`."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, device: str = "cpu") -> "Generator":
        """Read a folder written by `save` (weights with weights_only=True)."""

    @property
    @abstractmethod
    def model_card(self) -> dict:
        """What the model was trained on (a hash of the subject ids, never the ids), settings, privacy ledger."""


GENERATORS: dict[str, type[Generator]] = {}


def register_generator(cls: type[Generator]) -> type[Generator]:
    if cls.name in GENERATORS:
        raise ValueError(f"generator {cls.name!r} is registered twice")
    GENERATORS[cls.name] = cls
    return cls


def create_generator(name: str, **config) -> Generator:
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; known: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[name](**config)
