"""Copy matching under smooth deformations: the Pearson correlation of a slice to a training slice after a
deformable registration.

A generator that memorises a patient and bends it (an elastic augmentation learnt along, a warped decoder) keeps
the patient's own anatomy, texture and noise, but moves every pixel by its own small amount: a warp of 1.5 px rms
at 32 px left no copy found by the rigid, registered or tile-wise searches (robust_match.py). Here the training
slice is warped onto the synthetic one by a smooth displacement field (a `GRID` x `GRID` lattice of control points,
bicubic between them) that maximises their correlation, coarse to fine (blurred slices first), and the score is the
correlation of their fine detail after it (each slice minus its blur by FINE_PX). A real new patient's slice gets its
anatomy aligned too, but its texture and noise are its own; a warped copy's are the original's, and the registration
brings them back. The whole slices' correlation after the registration told them apart less well: real new patients
0.96 (max 0.988), copies 0.97-0.99 once the cohort had gone through NIfTI at 64 px (1 of 10 copies confirmed); the
fine detail's: real new patients 0.75 (max 0.83), copies 0.87-0.91 (10 of 10).

Candidates, as in the other searches, come by patient: each query patient is compared with every training patient
on three representative slices (end-diastole at 25%, 50%, 75% of the stack) as 8 x 8 thumbnails, registered
coarsely (16 px) to the few whose thumbnails correlate best, and its slices are matched only against the best
`patients` training patients' slices of the same phase and nearest stack positions, and against the slice's own
OWN_SLICES nearest training slices by 16 x 16 thumbnail (a few warped training slices inside an otherwise new
patient win no patient vote: measured, a quarter of 10 new patients' slices warped copies at 1.5 px, the 16-px
thumbnails' 4 nearest held the source for 31 of 51 copied slices, the shift-invariant spectra's for 5); the best of
those, by a coarse registration, is registered at full resolution.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .neighbours import NeighbourIndex
from .robust_match import _as_tensor, blurred

GRID = 8  # control points per side at 32 px (4.4 px apart): smooth warps, not a free pixel shuffle
STEPS, BLUR_STEPS = 80, 40  # Adam steps, the first ones on slices blurred by BLUR_PX (a wider basin)
BLUR_PX = 1.0
LR = 0.05  # measured: a larger step (0.1-0.2, with or without a cosine decay) left copies less well matched
FINE_PX = 0.7  # the score's fine detail: a slice minus its blur by this sd (px at 32 px)
MARGIN = 3  # px left out of the correlation at each edge (the warp pulls border pixels in)
COARSE_SIZE, COARSE_GRID, COARSE_STEPS, COARSE_LR, COARSE_MARGIN = 16, 4, 40, 0.08, 2
REPRESENTATIVE_POSITIONS = (0.25, 0.5, 0.75)  # stack positions (0 base, 1 apex) of a patient's coarse match
PREFILTER_PATIENTS, PREFILTER_SIZE = 8, 8  # patients registered coarsely per query patient, by thumbnail correlation
SLICES_PER_PATIENT = 2  # a candidate patient's slices tried per query slice: same phase, nearest positions
OWN_SLICES, OWN_SIZE = 4, 16  # each query slice's own nearest training slices, by thumbnails of this side
CHUNK = 512  # pairs registered at once (memory: about 50 floats per pixel per pair; one progress step)


def _ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(dim=(1, 2), keepdim=True)
    b = b - b.mean(dim=(1, 2), keepdim=True)
    return (a * b).sum(dim=(1, 2)) / (a.norm(dim=(1, 2)) * b.norm(dim=(1, 2)) + 1e-8)


def _blur(x: torch.Tensor, sd: float) -> torch.Tensor:
    return torch.as_tensor(blurred(x.numpy(), sd, x.shape[-1]))


@lru_cache(maxsize=8)
def _upsampling(grid: int, size: int) -> torch.Tensor:
    """(grid^2, size^2): the lattice-to-pixels interpolation (bicubic, corners aligned) as one matrix. It is linear,
    so a product replaces `F.interpolate` and its backward pass, two thirds of the registration's time."""
    unit = torch.eye(grid * grid).reshape(grid * grid, 1, grid, grid)
    mode = "bicubic" if grid >= 4 else "bilinear"
    return F.interpolate(unit, size=(size, size), mode=mode, align_corners=True).reshape(grid * grid, size * size)


def _fine(x: torch.Tensor) -> torch.Tensor:
    return x - _blur(x, FINE_PX)


def _register_chunk(query: torch.Tensor, reference: torch.Tensor, grid: int, steps: int, blur_steps: int, lr: float,
                    margin: int, fine: bool) -> torch.Tensor:
    """Warp each reference onto its query (both (P, S, S)) to the best correlation; return the correlation over the
    central crop after the warp (at least the unwarped one), of the fine detail alone when `fine`."""
    n, size = len(query), query.shape[-1]
    crop = (slice(None), slice(margin, size - margin), slice(margin, size - margin))
    field = torch.zeros(n, 2, grid, grid, requires_grad=True)
    identity = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 1, size, size], align_corners=False)
    optimiser = torch.optim.Adam([field], lr=lr)
    basis = _upsampling(grid, size)

    def warped(images):
        dense = (field.reshape(n * 2, grid * grid) @ basis).reshape(n, 2, size, size).permute(0, 2, 3, 1)
        return F.grid_sample(images[:, None], identity + dense, mode="bilinear", padding_mode="border",
                             align_corners=False)[:, 0]

    blurred = (_blur(query, BLUR_PX), _blur(reference, BLUR_PX)) if blur_steps else None
    for step in range(steps):
        q, r = blurred if step < blur_steps else (query, reference)
        loss = -_ncc(warped(r)[crop], q[crop]).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        fit = warped(reference)
        if fine:  # the score: the fine detail only, where a stranger's texture and noise are its own
            fit, reference, query = _fine(fit), _fine(reference), _fine(query)
        # the identity is a warp too: Adam's normalised steps can leave a near-perfect match slightly worse off
        return torch.maximum(_ncc(fit[crop], query[crop]), _ncc(reference[crop], query[crop]))


def registered_correlation(queries: np.ndarray, references: np.ndarray, coarse: bool = False, desc: str | None = None
                           ) -> np.ndarray:
    """Per pair (queries[i], references[i]): after the deformable registration at full resolution, the correlation of
    their fine detail (each slice minus its FINE_PX blur); `coarse`: the whole slices' correlation after a
    registration at COARSE_SIZE px with a coarser lattice and no blur stage (to rank candidates). `desc`: a progress
    bar's label (none when None)."""
    if len(queries) != len(references):
        raise ValueError(f"{len(queries)} queries but {len(references)} references")
    out = np.empty(len(queries), dtype=np.float64)
    for start in tqdm(range(0, len(queries), CHUNK), desc=desc, disable=desc is None, leave=False):
        q = torch.as_tensor(np.ascontiguousarray(queries[start:start + CHUNK], dtype=np.float32))
        r = torch.as_tensor(np.ascontiguousarray(references[start:start + CHUNK], dtype=np.float32))
        if coarse:
            q = F.interpolate(q[:, None], size=(COARSE_SIZE, COARSE_SIZE), mode="area")[:, 0]
            r = F.interpolate(r[:, None], size=(COARSE_SIZE, COARSE_SIZE), mode="area")[:, 0]
            score = _register_chunk(q, r, COARSE_GRID, COARSE_STEPS, 0, COARSE_LR, COARSE_MARGIN, fine=False)
        else:
            score = _register_chunk(q, r, GRID, STEPS, BLUR_STEPS, LR, MARGIN, fine=True)
        out[start:start + len(q)] = score.double().numpy()
    return out


def representative_slices(codes: np.ndarray, phases: np.ndarray, positions: np.ndarray, n_patients: int
                          ) -> np.ndarray:
    """(n_patients, len(REPRESENTATIVE_POSITIONS)) slice indices: per patient its end-diastolic slices (any, when it
    has none) nearest each representative stack position; -1 for a patient without slices."""
    out = np.full((n_patients, len(REPRESENTATIVE_POSITIONS)), -1, dtype=np.int64)
    for patient in range(n_patients):
        idx = np.flatnonzero(codes == patient)
        if not len(idx):
            continue
        ed = idx[phases[idx] == "ED"]
        idx = ed if len(ed) else idx
        out[patient] = [idx[np.argmin(np.abs(positions[idx] - p))] for p in REPRESENTATIVE_POSITIONS]
    return out


def _thumbnails(images: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """(patients, positions, PREFILTER_SIZE^2) centred, unit-norm thumbnails of the representative slices (zeros
    where a patient has none)."""
    x = torch.as_tensor(images[np.maximum(rows.ravel(), 0)])[:, None]
    x = F.interpolate(x, size=(PREFILTER_SIZE, PREFILTER_SIZE), mode="area").reshape(len(x), -1)
    x = x - x.mean(dim=1, keepdim=True)
    x = x / (x.norm(dim=1, keepdim=True) + 1e-8)
    x[torch.as_tensor(rows.ravel() < 0)] = 0.0
    return x.reshape(*rows.shape, -1)


def candidate_patients(query: tuple, reference: tuple, patients: int) -> np.ndarray:
    """(query patients, `patients`) reference patient codes, best first, by the mean coarse registered correlation of
    the representative slices, among the PREFILTER_PATIENTS whose thumbnails correlate best (a warp of a few pixels
    at 32 px is under a pixel of a thumbnail's). `query` and `reference`: (images, patient codes, phases,
    positions)."""
    q_images, q_codes, q_phases, q_pos = query
    r_images, r_codes, r_phases, r_pos = reference
    nq, nr = int(q_codes.max()) + 1, int(r_codes.max()) + 1
    qi = representative_slices(q_codes, q_phases, q_pos, nq)
    ri = representative_slices(r_codes, r_phases, r_pos, nr)
    thumbs = torch.einsum("qkd,rkd->qr", _thumbnails(q_images, qi), _thumbnails(r_images, ri)).numpy()
    shortlist = np.argsort(-thumbs, axis=1, kind="stable")[:, :min(PREFILTER_PATIENTS, nr)]  # (nq, S)
    a, b = np.repeat(qi, shortlist.shape[1], axis=0).ravel(), ri[shortlist.ravel()].ravel()
    ok = (a >= 0) & (b >= 0)
    score = np.full(len(a), -np.inf)
    score[ok] = registered_correlation(q_images[a[ok]], r_images[b[ok]], coarse=True)
    mean = score.reshape(nq, shortlist.shape[1], -1).mean(axis=2)
    order = np.argsort(-mean, axis=1, kind="stable")[:, :min(patients, nr)]
    return np.take_along_axis(shortlist, order, axis=1)


def own_slices(q_images: np.ndarray, r_images: np.ndarray, k: int = OWN_SLICES) -> np.ndarray:
    """(queries, k) indices of each query slice's nearest reference slices by the correlation of OWN_SIZE-px
    thumbnails (a warp of a pixel or two at 32 px moves a thumbnail's pixel by under one)."""
    def thumbnails(images):
        x = F.interpolate(torch.as_tensor(images)[:, None], size=(OWN_SIZE, OWN_SIZE), mode="area").reshape(
            len(images), -1)
        x = x - x.mean(dim=1, keepdim=True)
        return (x / (x.norm(dim=1, keepdim=True) + 1e-8)).numpy()

    return NeighbourIndex(thumbnails(r_images)).search(thumbnails(q_images), k)[1]


def _nearest_slices(query_phase, query_pos, r_idx: np.ndarray, r_phases: np.ndarray, r_pos: np.ndarray) -> np.ndarray:
    same = r_idx[r_phases[r_idx] == query_phase]
    pool = same if len(same) else r_idx
    return pool[np.argsort(np.abs(r_pos[pool] - query_pos), kind="stable")[:SLICES_PER_PATIENT]]


def warped_similarity(query: tuple, reference: tuple, patients: int = 2, size: int = 32, desc: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per query slice: the correlation to its best candidate training slice after the deformable registration (at
    `size` px), and that slice's index. `query` and `reference`: (images, patient codes, phases, positions).
    `desc`: the progress bar's label (none when None)."""
    q_images, q_codes, q_phases, q_pos = query
    r_images, r_codes, r_phases, r_pos = reference
    if not len(q_images) or not len(r_images):
        return np.full(len(q_images), np.nan), np.full(len(q_images), -1, dtype=np.int64)
    q_images, r_images = _as_tensor(q_images, size).numpy(), _as_tensor(r_images, size).numpy()
    query, reference = (q_images, q_codes, q_phases, q_pos), (r_images, r_codes, r_phases, r_pos)
    chosen = candidate_patients(query, reference, patients)
    own = own_slices(q_images, r_images)
    members = [np.flatnonzero(r_codes == p) for p in range(int(r_codes.max()) + 1)]
    pairs_q, pairs_r = [], []
    for i in range(len(q_images)):
        tried = [int(j) for p in chosen[q_codes[i]]
                 for j in _nearest_slices(q_phases[i], q_pos[i], members[p], r_phases, r_pos)]
        tried += [int(j) for j in own[i] if int(j) not in tried]
        pairs_q += [i] * len(tried)
        pairs_r += tried
    pairs_q, pairs_r = np.asarray(pairs_q), np.asarray(pairs_r)
    coarse = registered_correlation(q_images[pairs_q], r_images[pairs_r], coarse=True)
    # per query slice, its best coarse candidate: pairs sorted by slice, best first (first wins a tie, as before)
    order = np.lexsort((-coarse, pairs_q))
    first = order[np.r_[True, pairs_q[order][1:] != pairs_q[order][:-1]]]
    best_ref = np.full(len(q_images), -1, dtype=np.int64)
    best_ref[pairs_q[first]] = pairs_r[first]
    return registered_correlation(q_images, r_images[best_ref], desc=desc), best_ref
