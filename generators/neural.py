"""What the four neural image generators share: settings, fitting, seeded sampling, scoring, the model card.

A subclass says which networks it has (`_build`), how it learns (`_objectives`, run by the one loop in
`training.py`), how it turns per-slice noise into images (`_sample_batch`) and how it scores membership
(`_membership_batch`). Everything else (vendor table, batching, determinism, the mask generator and vendor
statistics that `synthesize` needs, the model folder) lives here once.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from cmri_release.core.fs import package_versions
from cmri_release.core.labels import check_labels
from cmri_release.core.parallel import seeded_global_rng
from cmri_release.core.sliceset import SliceSet

from .base import DPConfig, Generator, require_epoch_budget
from .masks import MaskModel
from .networks import CondUNet, preset
from .training import (Batch, Objective, TrainSettings, model_to_images, one_hot_tensor, run_training,
                       make_tensors)

# Settings every neural generator takes; a subclass adds its own in EXTRA_DEFAULTS.
BASE_DEFAULTS: dict = {
    "network": "compact",  # a preset of networks.PRESETS
    "channels": None,  # override the preset's channel widths, e.g. [32, 64, 128]
    "blocks": None,  # override the preset's residual blocks per level
    "spade": True,  # label-map modulation of every normalisation, on top of the concatenated one-hot
    "batch_size": 16,
    "lr": 1e-3,
    "warmup_steps": 20,
    "grad_clip": 1.0,
    "ema_decay": 0.995,
    "sample_batch": 64,
    # Correlation of the initial noise of neighbouring slices of one stack (ED and ES at one position share it):
    # every slice keeps the model's own distribution, the stack becomes one body (docs/fidelity-utility-checks.md,
    # the stacks checks).
    "stack_noise_correlation": 0.95,
}


def subjects_fingerprint(subject_ids) -> str:
    """sha256 of the sorted, newline-joined subject ids: identifies the training set, reveals no id."""
    return hashlib.sha256("\n".join(sorted(set(map(str, subject_ids)))).encode()).hexdigest()


def vendor_statistics(train: SliceSet) -> dict:
    """Per vendor, aggregate (median over its patients) metadata that synthetic patients get: the intensity
    mapping back to scanner units, slice thickness, frame count and ES frame. Never one patient's values alone
    when a vendor has several patients."""
    stats = {}
    meta = train.subject_meta
    by_vendor: dict[str, list[dict]] = {}
    for sid, vendor in train.subject_vendor().items():
        by_vendor.setdefault(vendor, []).append(meta.get(sid, {}))
    for vendor, metas in sorted(by_vendor.items()):
        intensity = [m["intensity"] for m in metas if isinstance(m.get("intensity"), dict)]
        kinds = sorted({i.get("kind") for i in intensity})
        entry = {"n_subjects": len(metas)}
        if len(kinds) == 1:
            keys = [k for k in intensity[0] if k != "kind"]
            entry["intensity"] = {"kind": kinds[0], **{k: float(np.median([i[k] for i in intensity])) for k in keys}}
        for key, out in (("thickness_mm", "thickness_mm"), ("n_frames", "n_frames")):
            values = [m[key] for m in metas if isinstance(m.get(key), (int, float))]
            if values:
                entry[out] = float(np.median(values))
        es = [m["frame_index"]["ES"] for m in metas if isinstance(m.get("frame_index"), dict)
              and isinstance(m["frame_index"].get("ES"), (int, float))]
        if es:
            entry["es_frame"] = int(np.median(es))
        stats[vendor] = entry
    population = {}
    for key in ("height", "weight"):
        values = [m[key] for m in meta.values() if isinstance(m.get(key), (int, float))]
        if values:
            population[key] = float(np.median(values))
    return {"vendors": stats, "population": population}


# Guards every generator's count of running samplers (NeuralGenerator._channels_last).
_LAYOUT_LOCK = threading.Lock()


class NeuralGenerator(Generator):
    EXTRA_DEFAULTS: ClassVar[dict] = {}
    parallel_sampling: ClassVar[bool] = True  # sample / membership_scores in several threads (_channels_last)

    def __init__(self, **config):
        defaults = {**BASE_DEFAULTS, **self.EXTRA_DEFAULTS}
        unknown = sorted(set(config) - set(defaults))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown} for generator {self.name!r}; known: {sorted(defaults)}")
        self.config = {**defaults, **config}
        preset(self.config["network"])  # an unknown preset raises here, with the known names
        rho = self.config["stack_noise_correlation"]
        if not isinstance(rho, (int, float)) or not 0.0 <= float(rho) <= 1.0:
            raise ValueError(f"stack_noise_correlation must be a number in [0, 1], got {rho!r}")
        self.device = "cpu"
        self.vendors: list[str] = []
        self.image_size: int | None = None
        self.preprocess: dict | None = None  # the PreprocessConfig the training data went through
        self.mask_model: MaskModel | None = None
        self.mask_model_error: str | None = None
        self.vendor_stats: dict = {}
        self._card: dict = {}
        self._built = False

    # --- what a subclass provides -------------------------------------------------------------------------------
    @abstractmethod
    def _build(self, n_vendors: int) -> None:
        """Create the networks (attributes) for `n_vendors` vendors."""

    @abstractmethod
    def _networks(self) -> dict[str, nn.Module]:
        """Name -> module, everything the model folder's state dict holds."""

    @abstractmethod
    def _objectives(self) -> list[Objective]:
        ...

    def _ema_modules(self) -> list[nn.Module]:
        return []

    @abstractmethod
    def _initial_noise(self, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
        """All the randomness `n` samples need, drawn up front so that a sample does not depend on batching."""

    @abstractmethod
    def _sample_batch(self, noise: torch.Tensor, cond: torch.Tensor, vendor: torch.Tensor) -> torch.Tensor:
        """(B, ...) noise, one-hot, vendor index -> (B, 1, H, W) images in [-1, 1]."""

    @abstractmethod
    def _membership_batch(self, batch: Batch, gen: torch.Generator) -> torch.Tensor:
        """(B,) scores, higher = more member-like."""

    def _prepare_private(self, account, seed: int) -> None:
        """Called by `fit` after the mask model is fitted and before the objectives are built, with the privacy
        account under DP and None otherwise (a DP GAN draws its fakes' label maps from the DP mask model)."""

    def _evaluations_per_sample(self) -> int:
        """Network evaluations one sampled slice costs (benchmarks report it)."""
        return 1

    # --- shared machinery ---------------------------------------------------------------------------------------
    def unet_kwargs(self) -> dict:
        net = preset(self.config["network"])
        for key in ("channels", "blocks"):
            if self.config[key] is not None:
                net[key] = self.config[key]
        return {"channels": tuple(net["channels"]), "blocks": int(net["blocks"]), "emb_dim": int(net["emb_dim"]),
                "spade": bool(self.config["spade"])}

    def _unet(self, in_channels: int, time_conditioned: bool) -> CondUNet:
        return CondUNet(in_channels=in_channels, out_channels=1, n_vendors=len(self.vendors),
                        time_conditioned=time_conditioned, **self.unet_kwargs())

    @property
    def null_vendor(self) -> int:
        return len(self.vendors)

    def vendor_indices(self, vendors, strict: bool = True) -> np.ndarray:
        """Vendor names -> embedding indices; unknown names raise (strict) or map to the 'no vendor' token."""
        lookup = {v: i for i, v in enumerate(self.vendors)}
        out = []
        for v in vendors:
            if v not in lookup and strict:
                raise ValueError(f"vendor {v!r} is not one this model was trained on: {', '.join(self.vendors)}")
            out.append(lookup.get(v, self.null_vendor))
        return np.array(out, dtype=np.int64)

    def _require_fitted(self) -> None:
        if not self._built:
            raise RuntimeError(f"generator {self.name!r} is not fitted: call fit() or load a model folder")

    def _train_settings(self) -> TrainSettings:
        c = self.config
        return TrainSettings(batch_size=int(c["batch_size"]), warmup_steps=int(c["warmup_steps"]),
                             grad_clip=c["grad_clip"], ema_decay=c["ema_decay"])

    def parameter_count(self) -> int:
        return int(sum(p.numel() for m in self._networks().values() for p in m.parameters()))

    def fit(self, train: SliceSet, privacy: DPConfig | None = None, *, epochs: int | None = None,
            minutes: float | None = None, device: str = "cpu", seed: int = 0, quiet: bool = False) -> dict:
        labelled = train.labelled()
        if len(labelled) == 0:
            raise ValueError("the training data holds no annotated slices")
        self.vendors = labelled.vendor_names
        self.image_size = labelled.size
        self.device = device
        if self.preprocess is None:
            kind = next((m.get("intensity", {}).get("kind") for m in labelled.subject_meta.values()), "percentile")
            self.preprocess = {"size": labelled.size, "fov_mm": labelled.size * labelled.spacing_mm,
                               "normalisation": kind or "percentile"}
        with seeded_global_rng(seed):  # the same weights for a seed, whatever is trained beside this model
            self._build(len(self.vendors))
        self._built = True
        account = None
        if privacy is not None:  # patient-level DP: check the networks and the settings before anything is fitted
            from .dp import open_account, require_dp_compatible
            require_dp_compatible(self._networks(), self.name)
            require_epoch_budget(privacy, epochs)
            account = open_account(privacy, n_patients=len(labelled.subjects))
        divisor = max(getattr(m, "divisor", 1) for m in self._networks().values())
        if labelled.size % divisor:
            raise ValueError(f"image size {labelled.size} must be a multiple of {divisor} for this network")
        for m in self._networks().values():
            m.to(device)
        try:  # the mask generator first: it is fast, and a cohort too small for it should say so early
            if account is None:
                self.mask_model = MaskModel().fit(labelled)
            else:
                from .dp.masks import fit_private_mask_model
                self.mask_model = fit_private_mask_model(labelled, account)
            self.mask_model_error = None
        except ValueError as exc:
            self.mask_model, self.mask_model_error = None, str(exc)
        if account is None:
            self.vendor_stats = vendor_statistics(labelled)
        else:
            from .dp.metadata import public_vendor_statistics
            self.vendor_stats = public_vendor_statistics(self.vendors)
        self._share_main_statistics()
        self._prepare_private(account, seed)
        data = make_tensors(labelled, lambda names: self.vendor_indices(names))
        log = run_training(self._objectives(), data, self._train_settings(), epochs=epochs, minutes=minutes,
                           seed=seed, device=device, quiet=quiet, privacy=account,
                           ema_modules=self._ema_modules(), description=f"train {self.name}")
        self._card = self._make_card(labelled, log.to_dict(), seed, epochs, minutes, device)
        if log.privacy is not None:
            self._card["privacy"] = log.privacy
        return log.to_dict()

    def _share_main_statistics(self) -> None:
        """Under torchrun, rank 0's mask model and vendor statistics on every rank: one release from the patients
        (under DP, one draw of its noise), and the same label maps wherever a rank samples from the mask model."""
        from . import distributed

        if not distributed.current().active:
            return
        mine = (None if self.mask_model is None else self.mask_model.to_dict(), self.mask_model_error,
                self.vendor_stats)
        masks, self.mask_model_error, self.vendor_stats = distributed.broadcast_from_main(mine)
        self.mask_model = None if masks is None else MaskModel.from_dict(masks)

    def _make_card(self, train: SliceSet, log: dict, seed: int, epochs, minutes, device: str) -> dict:
        vendors = {v: int(n) for v, n in zip(*np.unique(
            [train.subject_vendor()[s] for s in train.subjects], return_counts=True))}
        return {
            "generator": self.name,
            "settings": dict(self.config),
            "network": {"parameters": self.parameter_count(), **{k: (list(v) if isinstance(v, tuple) else v)
                                                                 for k, v in self.unet_kwargs().items()}},
            "training_data": {"subjects_sha256": subjects_fingerprint(train.subjects),
                              "n_subjects": len(train.subjects), "n_slices": len(train), "vendors": vendors},
            "image_size": self.image_size,
            "spacing_mm": float(train.spacing_mm),
            "preprocess": self.preprocess,
            "training": {"seconds": log["seconds"], "epochs": log["epochs"], "steps": log["steps"],
                         "images_per_second": log["images_per_second"], "final_loss": log["final_loss"],
                         "budget": {"epochs": epochs, "minutes": minutes}, "device": device,
                         "world_size": log.get("world_size", 1), "backend": log.get("backend")},
            "seed": seed,
            "sampling": {"network_evaluations_per_slice": self._evaluations_per_sample()},
            "mask_generator": ({"kind": "polar-shape-gaussian", "n_patients": self.mask_model.n_patients,
                                "groups": self.mask_model.groups} if self.mask_model is not None
                               else {"kind": None, "reason": self.mask_model_error}),
            "package_versions": package_versions(),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "privacy": {"dp": False, "unit": "patient"},
        }

    @property
    def model_card(self) -> dict:
        self._require_fitted()
        return dict(self._card)

    def _labels_tensor(self, labels: np.ndarray) -> torch.Tensor:
        lab = check_labels(labels, "label maps to sample from")
        if lab.ndim != 3 or lab.shape[1] != lab.shape[2]:
            raise ValueError(f"label maps must be (N, H, H), got {lab.shape}")
        if lab.shape[1] != self.image_size:
            raise ValueError(f"label maps are {lab.shape[1]} px but this model was trained at {self.image_size} px")
        return one_hot_tensor(lab)

    @contextlib.contextmanager
    def _channels_last(self):
        """Networks in channels_last while sampling: oneDNN's convolutions run about 20% faster on the CPU in that
        layout (the same numbers to 1e-5); the contiguous layout is restored after, for training and saving.
        Re-entrant and safe across threads (subjects synthesised side by side): the layout changes only when the
        first sampler comes in and when the last one leaves, never under a running one."""
        modules = list(self._networks().values())
        with _LAYOUT_LOCK:
            self._samplers = getattr(self, "_samplers", 0) + 1
            if self._samplers == 1:
                for m in modules:
                    m.to(memory_format=torch.channels_last)
        try:
            yield
        finally:
            with _LAYOUT_LOCK:
                self._samplers -= 1
                if self._samplers == 0:
                    for m in modules:
                        m.to(memory_format=torch.contiguous_format)

    @torch.no_grad()
    def sample(self, labels: np.ndarray, vendors, seed: int, positions=None) -> np.ndarray:
        with self._channels_last():
            return self._sample(labels, vendors, seed, positions)

    def _stack_noise(self, positions, size: int, gen: torch.Generator) -> torch.Tensor:
        """Initial noise for slices at `positions` (integers along one stack): one draw per position, neighbouring
        positions correlated by `stack_noise_correlation` (a stationary AR(1) chain, so every draw is still
        standard normal: each slice's distribution is the model's), slices at one position sharing their draw."""
        positions = np.asarray(positions)
        levels, index = np.unique(positions, return_inverse=True)
        rho = float(self.config.get("stack_noise_correlation", 0.0))  # checked on construction
        fresh = self._initial_noise(len(levels), size, gen)
        chain = fresh.clone()
        for k in range(1, len(levels)):
            chain[k] = rho * chain[k - 1] + math.sqrt(1.0 - rho * rho) * fresh[k]
        return chain[torch.as_tensor(index.reshape(-1), dtype=torch.long)]

    def _sample(self, labels: np.ndarray, vendors, seed: int, positions=None) -> np.ndarray:
        self._require_fitted()
        cond = self._labels_tensor(labels)
        n = len(cond)
        names = [vendors] * n if isinstance(vendors, str) else list(vendors)
        if len(names) != n:
            raise ValueError(f"{n} label maps but {len(names)} vendors")
        if positions is not None and len(positions) != n:
            raise ValueError(f"{n} label maps but {len(positions)} positions")
        vendor = torch.as_tensor(self.vendor_indices(names), dtype=torch.long)
        gen = torch.Generator().manual_seed(int(seed))
        # on the CPU: the same samples on any device
        noise = (self._initial_noise(n, self.image_size, gen) if positions is None
                 else self._stack_noise(positions, self.image_size, gen))
        out = []
        step = int(self.config["sample_batch"])
        for start in range(0, n, step):
            sl = slice(start, start + step)
            x = self._sample_batch(noise[sl].to(self.device), cond[sl].to(self.device), vendor[sl].to(self.device))
            out.append(model_to_images(x))
        return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size), np.float32)

    @torch.no_grad()
    def membership_scores(self, slices: SliceSet, seed: int) -> np.ndarray:
        """Per slice; NaN for slices without a label map (the model is conditioned on one). Vendors the model never
        saw use the 'no vendor' token."""
        self._require_fitted()
        scores = np.full(len(slices), np.nan, dtype=np.float64)
        idx = np.flatnonzero(slices.has_label)
        if len(idx) == 0:
            return scores
        sub = slices.select(idx)
        if sub.size != self.image_size:
            raise ValueError(f"slices are {sub.size} px but this model was trained at {self.image_size} px")
        data = make_tensors(sub, lambda names: self.vendor_indices(names, strict=False))
        gen = torch.Generator().manual_seed(int(seed))
        out = []
        step = int(self.config["sample_batch"])
        with self._channels_last():
            for start in range(0, len(data), step):
                batch = data.batch(np.arange(start, min(start + step, len(data))), self.device)
                out.append(self._membership_batch(batch, gen).double().cpu().numpy())
        scores[idx] = np.concatenate(out)
        return scores

    # --- model folder -------------------------------------------------------------------------------------------
    def fitted_state(self) -> dict:
        return {"vendors": list(self.vendors), "image_size": self.image_size, "preprocess": self.preprocess}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v.detach().cpu() for name, m in self._networks().items()
                for k, v in m.state_dict().items()}

    def restore(self, fitted: dict, state: dict[str, torch.Tensor], mask_model: MaskModel | None,
                vendor_stats: dict, card: dict, device: str = "cpu") -> None:
        """Rebuild the networks from the fitted state and load the weights (strict: every key, every shape)."""
        self.vendors = [str(v) for v in fitted["vendors"]]
        self.image_size = int(fitted["image_size"])
        self.preprocess = fitted.get("preprocess")
        self._build(len(self.vendors))
        self._built = True
        for name, module in self._networks().items():
            prefix = f"{name}."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            module.load_state_dict(part, strict=True)
            module.to(device).eval()
        expected = {f"{name}.{k}" for name, m in self._networks().items() for k in m.state_dict()}
        if set(state) != expected:
            raise ValueError(f"unexpected weights: {sorted(set(state) - expected)[:3]}")
        self.device = device
        self.mask_model = mask_model
        self.vendor_stats = vendor_stats
        self._card = {k: v for k, v in card.items() if k != "checksums"}

    def save(self, folder: Path) -> None:
        from .checkpoint import save_generator
        save_generator(self, Path(folder))

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> "NeuralGenerator":
        from .checkpoint import load_generator
        gen = load_generator(Path(folder), device=device)
        if not isinstance(gen, cls):
            raise TypeError(f"{folder} holds a {gen.name!r} generator, not {cls.name!r}")
        return gen
