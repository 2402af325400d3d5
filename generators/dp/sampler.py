"""Patient-level Poisson sampling: one DP item is one PATIENT, never one slice.

Each step, Opacus' `UniformWithReplacementSampler` draws every patient independently with probability q (Poisson
sampling, what the accountants assume); each sampled patient then contributes `k` of its annotated slices, drawn at
random (with replacement only when it has fewer than k). Their k rows sit next to each other in the batch, and
`group_grad_samples` turns the k per-slice gradients into the patient's one per-sample gradient (the gradient of the
mean loss over its k slices) before Opacus clips it. So a patient is clipped once per step, however many slices it
has, and never appears twice in a step.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn


class PatientIndex(torch.utils.data.Dataset):
    """Item i is patient i, as a 1-tuple like a TensorDataset's (what Opacus' DP data loader expects); its length
    is what matters: Opacus derives the sample rate from the loader over it."""

    def __init__(self, n_patients: int):
        self.n_patients = n_patients

    def __len__(self) -> int:
        return self.n_patients

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        return (torch.tensor(i, dtype=torch.long),)


class PatientBatches:
    """Batches of slice indices: Poisson-sampled patients x `slices_per_patient` slices each, patient-major."""

    def __init__(self, patient_of_slice: np.ndarray, batch_sampler, slices_per_patient: int,
                 rng: np.random.Generator):
        if slices_per_patient < 1:
            raise ValueError(f"slices_per_patient must be at least 1, got {slices_per_patient}")
        codes = np.asarray(patient_of_slice)
        n = int(codes.max()) + 1 if len(codes) else 0
        self.slices = [np.flatnonzero(codes == p) for p in range(n)]
        if any(len(s) == 0 for s in self.slices):
            raise ValueError("every patient code must have at least one slice")
        # Opacus' distributed sampler draws from `total_size` patients in all (`num_samples` is this rank's share).
        total = getattr(batch_sampler, "total_size", getattr(batch_sampler, "num_samples", n))
        if total != n:
            raise ValueError(f"the patient sampler draws from {total} patients, the data has {n}")
        self.batch_sampler = batch_sampler
        self.k = int(slices_per_patient)
        self.rng = rng

    @property
    def n_patients(self) -> int:
        return len(self.slices)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def slices_of(self, patients) -> np.ndarray:
        """(len(patients) * k,) slice indices, the k of each patient consecutive."""
        out = [self.rng.choice(self.slices[p], size=self.k, replace=len(self.slices[p]) < self.k) for p in patients]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        """One epoch: 1 / q steps (Opacus' convention), each a Poisson draw of patients; a batch may be empty."""
        for patients in self.batch_sampler:
            yield self.slices_of(patients)


def group_grad_samples(params: list[nn.Parameter], slices_per_patient: int) -> None:
    """Per-slice gradients (B*k rows, patient-major) -> per-patient gradients (B rows): the mean over each patient's
    k rows, i.e. the gradient of that patient's mean slice loss. Gradients are linear, so this is exact."""
    k = int(slices_per_patient)
    if k == 1:
        return
    for p in params:
        gs = p.grad_sample
        if gs is None:
            continue
        if isinstance(gs, list):  # one tensor per backward pass; the loop does one per step
            gs = torch.cat(gs, dim=0)
        if gs.shape[0] % k:
            raise RuntimeError(f"{gs.shape[0]} per-slice gradients are not whole groups of {k} slices per patient")
        p.grad_sample = gs.reshape(gs.shape[0] // k, k, *gs.shape[1:]).mean(dim=1)
