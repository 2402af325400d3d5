"""DP-SGD for the shared training loop: Opacus' PrivacyEngine, driven by patients.

`open_account` starts one fit's privacy account: it checks the settings (delta at most 1 / (10 x training patients)),
fixes the noise of the few statistics released from all patients before training (`PrivacyAccount.release`, a
Gaussian mechanism whose history joins the accountant's), and holds Opacus' `PrivacyEngine`.
`PrivateTraining` then, before the first step: checks every privatised network with Opacus' validator, calibrates
the noise so that the whole history (those releases plus every DP-SGD step) meets the target epsilon under both
accountants, and wraps each private objective's module and optimiser with `PrivacyEngine.make_private` (Poisson
sampling over a dataset whose items are patients; hooks attached without wrapping the module, so the generator's
code calls its networks as usual). Each step it runs one backward pass over the sampled patients' slices, averages
each patient's slice gradients into one per-sample gradient, lets Opacus clip, noise and step, and adds the
gradient of any `public_loss` (computed with the hooks off: it touches no patient data, e.g. a GAN discriminator on
fakes from DP-released label maps) after the noise, as it needs none (opacus #418, #474).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP
from torch import nn

from cmri_release.core.errors import CmriError

from .. import distributed
from ..base import DPConfig
from ..steps import build_optimizer, plain_step
from . import grad_samplers, opacus_adapter
from .accounting import MIN_SIGMA, History, calibrate_noise, check_accountant, epsilons
from .distributed import lockstep_sampler
from .ledger import build_ledger
from .sampler import PatientBatches, PatientIndex, group_grad_samples
from .summed_grads import SkipSummedGrads
from .validate import require_dp_compatible

GRAD_SAMPLE_MODES = ("hooks", "functorch")
RELEASE_SHARE = 0.25  # of the epsilon budget, for the statistics released from all patients before training
PLANNED_RELEASES = 2  # the mask model's mean shape and its spread
DEFAULT_SLICES_PER_PATIENT = 1


class PrivacySettingsError(CmriError):
    """DP settings that cannot give the promised guarantee (a delta too large, secure mode unavailable...)."""


def default_delta(n_patients: int) -> float:
    """1 / (10 x training patients): a mechanism that leaked one whole patient with probability delta would, over
    the cohort, still leak someone with probability at most 1/10."""
    return 1.0 / (10.0 * n_patients)


@contextlib.contextmanager
def _quiet_opacus():
    """Opacus warns about secure RNG on every engine (the ledger records secure_mode instead)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        # torch warns when the first layer's input needs no gradient; Opacus' hooks only need the output's.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


@dataclass
class PrivacyAccount:
    """One fit's privacy spending: the settings, the engine, and the Gaussian releases made before training."""

    config: DPConfig
    n_patients: int
    delta: float
    release_noise: float
    engine: object  # opacus.PrivacyEngine
    history: History = field(default_factory=list)
    releases: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def release(self, total: np.ndarray, sensitivity: float, what: str) -> np.ndarray:
        """Gaussian mechanism: `total` (a sum over patients whose L2 sensitivity to one patient is `sensitivity`)
        plus N(0, (release_noise * sensitivity)^2) noise per entry; the release joins the accountant history."""
        if not np.isfinite(sensitivity) or sensitivity <= 0:
            raise ValueError(f"sensitivity must be positive and finite, got {sensitivity}")
        reference = torch.as_tensor(np.asarray(total, dtype=np.float64))
        noise = opacus_adapter.gaussian_noise(self.release_noise * sensitivity, reference, self.engine.secure_rng,
                                              self.config.secure_mode)
        self.history.append((self.release_noise, 1.0, 1))
        self.releases.append({"what": what, "noise_multiplier": round(self.release_noise, 6),
                              "sensitivity": float(sensitivity), "entries": int(reference.numel())})
        return (reference + noise).numpy()

    def spent(self) -> float:
        return epsilons(self.history, self.delta).worst if self.history else 0.0


def open_account(config: DPConfig, n_patients: int) -> PrivacyAccount:
    """Check the DP settings against the training cohort and start its account (before anything is fitted)."""
    from opacus import PrivacyEngine
    from opacus.accountants.utils import get_noise_multiplier

    check_accountant(config.accountant)
    if not np.isfinite(config.epsilon) or config.epsilon <= 0:
        raise PrivacySettingsError(f"epsilon must be a positive number, got {config.epsilon}")
    if not np.isfinite(config.max_grad_norm) or config.max_grad_norm <= 0:
        raise PrivacySettingsError(f"max_grad_norm must be positive, got {config.max_grad_norm}")
    if n_patients < 2:
        raise PrivacySettingsError(f"DP training needs at least 2 training patients, got {n_patients}")
    ceiling = default_delta(n_patients)
    delta = ceiling if config.delta is None else float(config.delta)
    if not 0 < delta <= ceiling * (1 + 1e-9):
        raise PrivacySettingsError(
            f"delta {delta:g} is above 1 / (10 x {n_patients} training patients) = {ceiling:.3g}: a mechanism "
            f"that leaked one whole patient with probability delta would be allowed; set delta to {ceiling:.3g} "
            f"or smaller (or leave it unset)")
    if config.secure_mode:
        try:
            import torchcsprng  # noqa: F401
        except ImportError:
            raise PrivacySettingsError("secure_mode needs the torchcsprng package (cryptographically secure noise "
                                       "and sampling), which is not installed; install it or train without "
                                       "secure_mode") from None
    with _quiet_opacus():
        engine = PrivacyEngine(accountant=config.accountant, secure_mode=config.secure_mode)
    # The releases together would spend at most RELEASE_SHARE of epsilon on their own (RDP, the looser bound).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # RDP's "optimal order is an end of the range" at extremes
        release_noise = get_noise_multiplier(target_epsilon=RELEASE_SHARE * config.epsilon, target_delta=delta,
                                             sample_rate=1.0, steps=PLANNED_RELEASES, accountant="rdp")
    return PrivacyAccount(config=config, n_patients=n_patients, delta=delta, release_noise=float(release_noise),
                          engine=engine)


class PrivateTraining:
    """The DP strategy of `training.run_training` (beside `training.PlainTraining`): the patient batches, the DP
    optimisers, one DP step, the ledger."""

    def __init__(self, objectives, data, settings, account: PrivacyAccount, *, epochs: int, seed: int,
                 grad_sample_mode: str = "hooks", slices_per_patient: int = DEFAULT_SLICES_PER_PATIENT):
        if grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {grad_sample_mode!r}")
        self.account = account
        self.config = account.config
        self.grad_clip = settings.grad_clip  # for the objectives that touch no patient data
        self.grad_sample_mode = grad_sample_mode
        self.k = int(slices_per_patient)
        private = [o for o in objectives if o.private]
        if not private:
            raise ValueError("DP training needs at least one objective that learns from patient data")
        if len(private) != 1:
            # Each private objective is one more mechanism per step; one is all the generators need.
            raise ValueError("DP training supports one private objective per step")
        self.private = private[0]
        require_dp_compatible({f"{self.private.name}[{i}]": m for i, m in enumerate(self.private.modules)},
                              self.private.name)
        n_patients = int(data.patient.max()) + 1
        if n_patients != account.n_patients:
            raise ValueError(f"the data holds {n_patients} patients, the privacy account was opened for "
                             f"{account.n_patients}")
        loader = torch.utils.data.DataLoader(PatientIndex(n_patients), batch_size=max(1, int(settings.batch_size)))
        engine = account.engine
        opacus_adapter.set_history(engine.accountant, account.history)  # the releases so far, then every step
        self.module = nn.ModuleList(self.private.modules)
        self.dist = distributed.current()
        if self.dist.active and n_patients < self.dist.world_size:
            raise ValueError(f"{n_patients} training patients cannot be split across {self.dist.world_size} "
                             f"processes; use at most {n_patients} processes")
        # Under torchrun, Opacus' DPDDP (rank 0's weights broadcast) makes make_private choose its distributed
        # optimiser (noise on rank 0 only, then all-reduce) and sampler (patients split between ranks, global q).
        wrapped = DPDDP(self.module) if self.dist.active else self.module
        optimizer = build_optimizer(self.private)
        with _quiet_opacus():
            # The noise is set below, once calibrated against exactly the rate the accountant will record.
            self.hooks, dp_optimizer, dp_loader = engine.make_private(
                module=wrapped, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0,
                max_grad_norm=self.config.max_grad_norm, poisson_sampling=True, grad_sample_mode=grad_sample_mode,
                wrap_model=False, loss_reduction="mean")
        if grad_sample_mode == "hooks":
            grad_samplers.install(self.hooks)  # the same per-sample gradients, cheaper for convolutions
        # Opacus records q = 1 / len(dp_loader) per step; its Poisson sampler draws with 1 / len(loader), which is
        # never larger (int(1 / (1 / L)) can round down), so accounting with the former is exact or conservative.
        self.steps_per_epoch = len(dp_loader)
        self.sample_rate = 1.0 / self.steps_per_epoch
        self.poisson_rate = float(dp_loader.batch_sampler.sample_rate)
        self.planned_steps = int(epochs) * self.steps_per_epoch
        try:
            self.noise_multiplier, self.binding = calibrate_noise(
                target_epsilon=self.config.epsilon, delta=account.delta, sample_rate=self.sample_rate,
                steps=self.planned_steps, prior=account.history, accountant=self.config.accountant)
        except ValueError as exc:
            self.hooks.cleanup()
            raise PrivacySettingsError(str(exc)) from None
        dp_optimizer.noise_multiplier = self.noise_multiplier
        opacus_adapter.scale_grad_once(dp_optimizer)
        self.optimizers = [dp_optimizer if o is self.private else build_optimizer(o) for o in objectives]
        self.params = list(dp_optimizer.params)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 5, self.dist.rank]))
        sampler = dp_loader.batch_sampler
        if self.dist.active:
            sampler = lockstep_sampler(sampler, seed, self.dist.rank,
                                       engine.secure_rng if self.config.secure_mode else None)
        self.batches = PatientBatches(data.patient, sampler, self.k, rng)
        self.steps_taken = 0
        # Hooks mode: autograd's batch-summed weight gradients, which the DP optimiser overwrites, are not computed.
        self.skip = SkipSummedGrads(self.private.modules, self.hooks) if grad_sample_mode == "hooks" else None

    def epoch(self):
        """One epoch of Poisson-sampled patients' slice indices."""
        return self.batches

    def step(self, objective, optimizer, batch, noise_gen: torch.Generator) -> float | None:
        """One step of `objective`: DP-SGD for the private one; for one that touches no patient data (a GAN's
        generator), a plain step with Opacus' hooks off, as nothing per-sample must be recorded."""
        if objective is self.private:
            return self.private_step(objective, optimizer, batch, noise_gen)
        with self.hooks_off():
            return plain_step(objective, optimizer, batch, noise_gen, self.grad_clip, f"DP step {self.steps_taken}")

    @contextlib.contextmanager
    def hooks_off(self):
        self.hooks.disable_hooks()
        try:
            yield
        finally:
            self.hooks.enable_hooks()

    def private_step(self, objective, optimizer, batch, noise_gen: torch.Generator) -> float | None:
        """One DP-SGD step on the sampled patients' slices; returns the loss (None for an empty Poisson batch)."""
        # The optimiser's zero_grad skips parameters that were frozen at that moment (a GAN freezes its
        # discriminator during the generator's step); per-sample state must never carry over between steps.
        for p in self.params:
            p.grad_sample = p.summed_grad = p.grad = None
        public_grads = None
        if objective.public_loss is not None:
            with self.hooks_off():
                public = objective.public_loss(noise_gen)
                public_grads = torch.autograd.grad(public, self.params, allow_unused=True)
            # Scaled to at most max_grad_norm, like one patient's clipped gradient, so that the unclipped fake-data
            # term cannot drown the private real-data one (opacus PR #494 saw that imbalance); post-processing.
            norm = torch.sqrt(sum((g.detach() ** 2).sum() for g in public_grads if g is not None))
            scale = min(1.0, self.config.max_grad_norm / (float(norm) + 1e-12))
            public_grads = [None if g is None else g * scale for g in public_grads]
        value = None
        if len(batch.x) == 0:
            # Nobody sampled: the step still releases noise (skipping it would tell that the batch was empty).
            for p in self.params:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
        else:
            with self.skip.forward_pass() if self.skip else contextlib.nullcontext():
                loss = objective.loss(batch, noise_gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{objective.name} loss became {loss.item()} at DP step {self.steps_taken}")
            with _quiet_opacus():
                loss.backward()
            group_grad_samples(self.params, self.k)
            value = float(loss.detach())
        if optimizer.pre_step():  # clip per patient, sum, add noise, divide by the expected batch size
            if public_grads is not None:  # before the all-reduce: every rank's public term, averaged
                for p, g in zip(self.params, public_grads):
                    if g is not None:
                        p.grad.add_(g)
            if self.dist.active:
                optimizer.reduce_gradients()  # Opacus' DistributedDPOptimizer: sum over ranks / world size
            optimizer.original_optimizer.step()
        self.steps_taken += 1
        return value

    def epochs_done(self) -> float:
        return self.steps_taken * self.sample_rate

    def epochs(self, log) -> float:
        """For the training log: steps times the sampling rate (what the accountant counts), whatever each rank saw."""
        return self.epochs_done()

    def ledger(self) -> dict:
        return build_ledger(
            history=opacus_adapter.history(self.account.engine.accountant), delta=self.account.delta, target_epsilon=self.config.epsilon,
            accountant=self.config.accountant, binding_accountant=self.binding,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.config.max_grad_norm, sample_rate=self.sample_rate, steps=self.steps_taken,
            epochs=self.epochs_done(), secure_mode=self.config.secure_mode, n_patients=self.account.n_patients,
            slices_per_patient=self.k, releases=self.account.releases, grad_sample_mode=self.grad_sample_mode,
            notes=self.account.notes + ([f"the target epsilon does not bind: the least noise searched "
                                         f"({MIN_SIGMA}) already meets it"] if self.noise_multiplier <= MIN_SIGMA
                                        else []) + ([f"stopped after {self.steps_taken} of {self.planned_steps} planned steps "
                                         f"(time budget); epsilon is what was spent"]
                                        if self.steps_taken < self.planned_steps else []))

    def close(self) -> None:
        """Remove Opacus' hooks and per-sample state so the networks are plain modules again."""
        if self.skip is not None:
            self.skip.remove()
        self.hooks.cleanup()
        for p in self.params:
            for attr in ("grad_sample", "summed_grad"):
                if hasattr(p, attr):
                    delattr(p, attr)
