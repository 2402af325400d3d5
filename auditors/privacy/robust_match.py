"""Robust copy matching: the best Pearson correlation of a slice to a reference slice over small shifts,
rotations and flips (correlation itself ignores gain and offset).

A slice shifted by one pixel correlates only ~0.75 with its original in a fine-textured image, so a
plain nearest-neighbour search misses shifted copies. Here each query slice is rotated and flipped
(a small bank of variants), and for every variant the central crop of each candidate reference slice
is correlated with every window of the query within `max_shift` pixels: the score is the best Pearson
correlation over all variants and shifts, computed on the overlap only (no padding enters it).

Candidates come from FAISS in a shift- and flip-invariant space (Fourier magnitude spectra), by patient:
each query patient's slices vote for reference patients, and every slice of the few most voted is searched
exactly. The exact search is batched matrix products (torch), one per shift, with no Python loop over slices.

A copy may also be turned by any angle, transposed or zoomed (`registered_similarity`): candidates come from the
same spectra of the query undone under a bank of rotations and zooms, the exact search registers each query slice
coarse to fine (the whole circle of rotations, both handednesses and a few zooms at half resolution, then a fine
grid around the best at full resolution on the closest candidate slices). Its fine step may score the best
quadratic intensity curve instead of gain and offset (`curve`): a copy under a gamma is a copy.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, signal

from .neighbours import NeighbourIndex

FLIPS = ("none", "h", "v")
TUKEY_ALPHA = 0.3  # the share of the slice a "tukey" spectrum window tapers
ZOOM_STEP = 1.15  # zooms of the bank at most this far apart: the fine grid (+-4%) and the correlation cover between


def zoom_bank(max_zoom: float, step: float = ZOOM_STEP) -> tuple[float, ...]:
    """Zooms from 1 / max_zoom to max_zoom, evenly spaced in log and at most `step` apart (1.3: 5 zooms)."""
    if max_zoom < 1.0 or step <= 1.0:
        raise ValueError(f"max_zoom must be >= 1 and step > 1, got {max_zoom}, {step}")
    per_side = math.ceil(math.log(max_zoom) / math.log(step) - 1e-9)
    return tuple(float(max_zoom ** (k / per_side)) for k in range(-per_side, per_side + 1)) if per_side else (1.0,)


def _as_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32))
    if x.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {tuple(x.shape)}")
    if x.shape[-1] != size:
        x = F.interpolate(x[:, None], size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")[:, 0]
    return x


def blurred(images: np.ndarray, sd_px: float, size: int = 32) -> np.ndarray:
    """Slices at `size` blurred in-plane by a Gaussian of `sd_px` (px at that size), borders extended."""
    small = _as_tensor(images, size).numpy()
    return ndimage.gaussian_filter(small, (0.0, sd_px, sd_px), mode="nearest").astype(np.float32)


def variants(images: torch.Tensor, rotations: tuple[float, ...], flips: tuple[str, ...]) -> torch.Tensor:
    """(N, V, H, W): every slice under every flip and rotation (degrees, bilinear, border values kept)."""
    flipped = []
    for flip in flips:
        if flip not in FLIPS:
            raise ValueError(f"unknown flip {flip!r}; known: {FLIPS}")
        flipped.append(images if flip == "none" else torch.flip(images, dims=(-1,) if flip == "h" else (-2,)))
    out = []
    for x in flipped:
        for angle in rotations:
            if angle == 0:
                out.append(x)
                continue
            a = math.radians(angle)
            theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                                 dtype=x.dtype).expand(len(x), 2, 3)
            grid = F.affine_grid(theta, (len(x), 1, *x.shape[-2:]), align_corners=False)
            out.append(F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="border",
                                     align_corners=False)[:, 0])
    return torch.stack(out, dim=1)


def warp(images: torch.Tensor, flip: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B, V, H, W): each slice under V similarity transforms: a horizontal flip where `flip`, then a rotation by
    `angle` degrees and a zoom by `scale` about the centre (bilinear, border values kept). The parameters are
    (B, V), each slice its own, or (V,), the same bank for every slice (one sampling grid for all)."""
    b, (h, w) = len(images), images.shape[-2:]
    shared = flip.ndim == 1
    n_var = flip.shape[-1]
    a = torch.deg2rad(angle.to(images.dtype))
    s = scale.to(images.dtype)
    f = torch.where(flip, -1.0, 1.0).to(images.dtype)
    # output pixel -> input pixel: undo the zoom and the rotation, then the flip (x -> -x)
    theta = torch.stack([torch.stack([f * torch.cos(a) / s, -f * torch.sin(a) / s, torch.zeros_like(a)], -1),
                         torch.stack([torch.sin(a) / s, torch.cos(a) / s, torch.zeros_like(a)], -1)], -2)
    theta = theta.reshape(-1, 2, 3)
    grid = F.affine_grid(theta, (len(theta), 1, h, w), align_corners=False)
    if shared:
        grid = grid[None].expand(b, n_var, h, w, 2)
    grid = grid.reshape(b * n_var, h, w, 2)
    src = images[:, None].expand(b, n_var, h, w).reshape(b * n_var, 1, h, w)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, n_var, h, w)


def _normalise_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Rows centred and scaled to unit norm; a flat row (its spread at the level of rounding of its values: a
    padded border) becomes zeros, not its rounding error blown up to a unit pattern that correlates by chance."""
    centred = x - x.mean(dim=dim, keepdim=True)
    norm = centred.norm(dim=dim, keepdim=True)
    flat = norm <= 1e-5 * x.norm(dim=dim, keepdim=True)
    return torch.where(flat, 0.0, centred / norm.clamp_min(1e-30))


def _quadrant_weights(f: int) -> torch.Tensor:
    """(f + 1, f + 1): how many points of the (2f + 1)^2 frequency grid each point (ky, kx >= 0) stands for under
    the reflections ky -> -ky and kx -> -kx: 4 inside the quadrant, 2 on an axis, 1 at the origin."""
    per_axis = torch.where(torch.arange(f + 1) > 0, 2.0, 1.0)  # +-k for k > 0, the axis itself once
    return per_axis[:, None] * per_axis[None, :]


def spectrum_vectors(images: np.ndarray, size: int = 32, margin: int = 4, fmax: int = 10,
                     window: str = "hann") -> np.ndarray:
    """Log-magnitude Fourier spectra of the Hann-windowed central crops, symmetrised over flips: a space where a
    shift leaves a slice where it was and a flip changes nothing, but a patient's fine texture still shows (a
    coarse, blurred space cannot tell phantom patients apart: the right patient is among 16 candidates only 40%
    of the time under a 3-px shift and a 4-degree rotation, against 68% here).

    The symmetrised spectrum is the same in all four quadrants (|F| of a real slice is point-symmetric, and the
    flip mirrors it), so each vector keeps one quadrant, each point weighted by the square root of how many points
    it stands for: every inner product, hence every search, is that of the whole (2 fmax + 1)^2 grid, with a
    quarter of the numbers ((fmax + 1)^2: 121 instead of 441).

    `window="tukey"` (with margin 0: the whole slice, flat over its middle 70%) is the space of slices moved far
    (translate_match.py): a shift of 5 px changes a Hann-windowed central crop, not this."""
    x = _as_tensor(images, size)[:, margin:size - margin, margin:size - margin]
    crop = x.shape[-1]
    if window == "hann":
        taper = torch.hann_window(crop, periodic=False, dtype=x.dtype)
    elif window == "tukey":
        taper = torch.as_tensor(signal.windows.tukey(crop, TUKEY_ALPHA), dtype=x.dtype)
    else:
        raise ValueError(f"window must be 'hann' or 'tukey', got {window!r}")
    x = (x - x.mean(dim=(1, 2), keepdim=True)) * (taper[:, None] * taper[None, :])
    spec = torch.fft.fftshift(torch.fft.fft2(x).abs(), dim=(-2, -1))
    c, f = crop // 2, min(fmax, crop // 2 - 1)
    spec = torch.log1p(spec[:, c - f:c + f + 1, c - f:c + f + 1])
    spec = 0.5 * (spec + torch.flip(spec, dims=(-1,)))  # |F| of a flipped slice is |F| mirrored
    spec = 0.5 * (spec + torch.flip(spec, dims=(-2, -1)))  # point symmetry, exact here rather than up to rounding
    full = _normalise_rows(spec.reshape(len(spec), -1), 1).reshape(spec.shape)
    quadrant = full[:, f:, f:] * _quadrant_weights(f).sqrt()
    return quadrant.reshape(len(spec), -1).numpy().astype(np.float32)


def _patient_votes(ids: np.ndarray, query_codes: np.ndarray, reference_codes: np.ndarray, n_query: int,
                   n_ref: int) -> np.ndarray:
    """(query patients, reference patients): each query slice votes for the patients of its nearest reference
    slices `ids` (Q, k), nearer ones weighing more."""
    rank_weight = 1.0 / (1.0 + np.arange(ids.shape[1]))
    votes = np.zeros((n_query, n_ref))
    np.add.at(votes, (np.repeat(query_codes, ids.shape[1]), reference_codes[ids].ravel()),
              np.tile(rank_weight, len(ids)))
    return votes


def _chosen_slices(votes: np.ndarray, query_codes: np.ndarray, reference_codes: np.ndarray, patients: int
                   ) -> np.ndarray:
    """(Q, C): every slice of the `patients` reference patients most voted for by each query slice's patient."""
    n_ref = votes.shape[1]
    chosen = np.argsort(-votes, axis=1, kind="stable")[:, :min(patients, n_ref)]  # (n_query, P)
    members = [np.flatnonzero(reference_codes == p) for p in range(n_ref)]
    width = max(len(m) for m in members)
    padded = np.stack([np.resize(m, width) for m in members])  # a short patient repeats its slices: harmless
    return padded[chosen].reshape(len(votes), -1)[query_codes]


def candidates(queries: np.ndarray, query_codes: np.ndarray, reference: np.ndarray, reference_codes: np.ndarray,
               k: int = 16, patients: int = 2, size: int = 32, own: int = 4, margin: int = 4,
               window: str = "hann") -> np.ndarray:
    """(Q, C) reference slice indices worth the exact search: every slice of the `patients` reference patients
    that a query patient's slices vote for most (each slice votes for the patients of its k nearest reference
    slices in the spectrum space), and the slice's own `own` nearest reference slices. Copies come as patients, so
    one patient's slices outvote a slice's noise; a patient assembled from slices of many patients (each slice a
    copy) outvotes nothing, and its slices' own neighbours find them. `margin`, `window`: the spectrum space
    (`spectrum_vectors`)."""
    query_codes = np.asarray(query_codes, dtype=np.int64)
    reference_codes = np.asarray(reference_codes, dtype=np.int64)
    n_query, n_ref = int(query_codes.max()) + 1, int(reference_codes.max()) + 1
    spectra = [spectrum_vectors(x, size, margin=margin, window=window) for x in (reference, queries)]
    _, ids = NeighbourIndex(spectra[0]).search(spectra[1], k)
    chosen = _chosen_slices(_patient_votes(ids, query_codes, reference_codes, n_query, n_ref), query_codes,
                            reference_codes, patients)
    return np.concatenate([chosen, ids[:, :min(own, ids.shape[1])]], axis=1) if own > 0 else chosen


def within_set_candidates(images: np.ndarray, codes: np.ndarray, k: int = 16, patients: int = 2, size: int = 32,
                          own: int = 4) -> np.ndarray:
    """As `candidates` with the set searched against itself: each slice's candidates come from OTHER patients
    only (its own patient is never voted for, its own slices never listed), so the best match is a twin, not
    itself. Needs at least two patients."""
    codes = np.asarray(codes, dtype=np.int64)
    n = int(codes.max()) + 1 if len(codes) else 0
    if n < 2:
        raise ValueError(f"a search within a set needs at least 2 patients, got {n}")
    spectra = spectrum_vectors(images, size)
    widest = int(np.bincount(codes).max())  # so many neighbours may be the slice's own patient
    _, ids = NeighbourIndex(spectra).search(spectra, min(len(images), k + widest))
    other = codes[ids] != codes[:, None]
    first = np.argsort(~other, axis=1, kind="stable")[:, :k]  # the nearest k of other patients, in order
    ids, other = np.take_along_axis(ids, first, 1), np.take_along_axis(other, first, 1)
    ids = np.where(other, ids, ids[:, :1])  # a set too small for k others repeats the nearest (always another)
    votes = _patient_votes(ids, codes, codes, n, n)
    np.fill_diagonal(votes, -np.inf)
    chosen = _chosen_slices(votes, codes, codes, min(patients, n - 1))
    return np.concatenate([chosen, ids[:, :min(own, ids.shape[1])]], axis=1) if own > 0 else chosen


SPECTRUM_ANGLES = tuple(float(a) for a in range(0, 180, 15))  # |F| of a real slice repeats every 180 degrees
KEEP_SPECTRA_BYTES = 256 * 2 ** 20  # undone spectra are kept for reuse up to this size, recomputed beyond it


def transformed_candidates(queries: np.ndarray, query_codes: np.ndarray, reference: np.ndarray,
                           reference_codes: np.ndarray, k: int = 16, patients: int = 2, size: int = 32,
                           angles: tuple[float, ...] = SPECTRUM_ANGLES, scales: tuple[float, ...] = (1.0,),
                           keep_spectra: list | None = None, own: int = 4) -> np.ndarray:
    """As `candidates`, for copies turned by any angle or zoomed: every query slice is undone under each rotation
    and zoom of the bank (the spectra are shift- and flip-invariant already, so this covers transposes too), and a
    query patient's votes for a reference patient count under the transform that gives it the most. (Measured on
    phantom copies turned by 10 or 20 degrees, a quarter turn, transposed or zoomed 1.15, 10 copied patients each:
    the source is among the 3 chosen patients for 50 of 50; reading every vote under the one transform on which
    the patient's slices agree most found 42, summing over transforms 30.) A list given as `keep_spectra` receives
    the undone spectra when all of them fit in KEEP_SPECTRA_BYTES (else it stays empty), for
    `registered_similarity(..., undone=...)` on the same queries, angles and scales. With `own` > 0, each slice
    also lists its own `own` nearest reference slices under whichever transform brings each closest: a few turned
    training slices inside an otherwise new patient outvote nothing (measured: a quarter of 10 new patients' slices
    turned copies, 0 of 206 slices had their source among the voted patients' slices)."""
    query_codes = np.asarray(query_codes, dtype=np.int64)
    reference_codes = np.asarray(reference_codes, dtype=np.int64)
    n_query, n_ref = int(query_codes.max()) + 1, int(reference_codes.max()) + 1
    index = NeighbourIndex(spectrum_vectors(reference, size))
    per_transform, near_sims, near_ids = [], [], []
    transforms = len(angles) * len(scales)
    for undone in undone_spectra(queries, size, angles, scales):
        if keep_spectra is not None and undone.nbytes * transforms <= KEEP_SPECTRA_BYTES:
            keep_spectra.append(undone)
        sims, ids = index.search(undone, k)
        per_transform.append(_patient_votes(ids, query_codes, reference_codes, n_query, n_ref))
        near_sims.append(sims[:, :own])
        near_ids.append(ids[:, :own])
    chosen = _chosen_slices(np.max(per_transform, axis=0), query_codes, reference_codes, patients)
    if own <= 0:
        return chosen
    return np.concatenate([chosen, _nearest_distinct(np.concatenate(near_sims, 1), np.concatenate(near_ids, 1),
                                                     own)], axis=1)


def _nearest_distinct(sims: np.ndarray, ids: np.ndarray, own: int) -> np.ndarray:
    """(Q, own): per row the `own` distinct ids of highest similarity (a slice found under several transforms
    counts once, at its best); a row with fewer distinct ids repeats its nearest."""
    order = np.argsort(-sims, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, 1)
    out = np.empty((len(ids), own), dtype=np.int64)
    for row, found in enumerate(ids):
        _, first = np.unique(found, return_index=True)
        distinct = found[np.sort(first)][:own]
        out[row] = np.resize(distinct, own)
    return out


def undone_spectra(queries: np.ndarray, size: int, angles: tuple[float, ...], scales: tuple[float, ...]):
    """Spectrum vectors of the queries turned back by each angle and zoom of the bank, one (Q, D) array at a time."""
    q = _as_tensor(queries, size)
    none = torch.zeros(1, dtype=torch.bool)
    with torch.no_grad():
        for angle in angles:
            for scale in scales:
                undone = warp(q, none, torch.tensor([-angle]), torch.tensor([1.0 / scale]))[:, 0]
                yield spectrum_vectors(undone.numpy(), size)


def window_sums(maps: torch.Tensor, crop: int) -> torch.Tensor:
    """(N, h - crop + 1, w - crop + 1): the sum of every crop x crop window of each (h, w) map, from a summed-area
    table (four lookups per window, where a direct sum reads crop^2 pixels: 30 times fewer reads at 32 px)."""
    table = F.pad(maps, (1, 0, 1, 0)).cumsum(1).cumsum(2)
    return table[:, crop:, crop:] - table[:, :-crop, crop:] - table[:, crop:, :-crop] + table[:, :-crop, :-crop]


# a window whose variance is below this share of its whole slice's is flat (a padded border): it scores 0
FLAT_WINDOW = 1e-4
FEW_VARIANTS = 8  # below this many variants per query, one grouped convolution beats a product per shift


def _window_dots(ref_rows: torch.Tensor, bank: torch.Tensor, crop: int) -> torch.Tensor:
    """(B, K, V, S): dot product of each query's K reference crops `ref_rows` (B, K, crop^2) with every crop-sized
    window (S shifts, row-major) of each of its V variants `bank` (B, V, H, W).

    Few variants (the small search: 6, the patches: 1): one grouped convolution, each query's crops the kernels
    of its own group (measured at 32 px: 60 -> 28 ms per chunk of the small search, 2.8 -> 0.7 ms for patches).
    Many (the registered search's bank of 300 turns and zooms): one batched product per shift, which is faster
    there (55 against 68 ms per coarse chunk)."""
    b, n_var, h, w = bank.shape
    k, n = ref_rows.shape[1], crop * crop
    sy, sx = h - crop + 1, w - crop + 1
    if n_var < FEW_VARIANTS:
        out = F.conv2d(bank.transpose(0, 1).contiguous(), ref_rows.reshape(b * k, 1, crop, crop), groups=b)
        return out.view(n_var, b, k, sy * sx).permute(1, 2, 0, 3)
    out = torch.empty((b, k, n_var, sy * sx), dtype=bank.dtype)
    for dy in range(sy):
        for dx in range(sx):
            window = bank[:, :, dy:dy + crop, dx:dx + crop].reshape(b, n_var, n).transpose(1, 2)  # (B, n, V)
            out[..., dy * sx + dx] = torch.bmm(ref_rows, window)
    return out


def _window_norms(bank: torch.Tensor, crop: int) -> torch.Tensor:
    """(B, V, S): the centred norm of every crop-sized window (S shifts, row-major) of each map of `bank` (B, V, H, W);
    infinite where the window is flat (a padded border), so that dividing by it scores 0.

    A window's spread ignores the offset. On a flat window (a border padded with one value) the running sums leave a
    spread of rounding error (~1e-7 of the squared window mean), and dots divided by it gave "correlations" of 25: a
    window below FLAT_WINDOW of its map's variance is flat (with centred maps the rounding stays far below)."""
    b, n_var, h, w = bank.shape
    n = crop * crop
    flat = bank.reshape(b * n_var, h, w)
    flat = flat - flat.mean(dim=(1, 2), keepdim=True)
    sums, squares = window_sums(flat, crop), window_sums(flat * flat, crop)  # (B V, sy, sx)
    spread = (squares - sums * sums / n).reshape(b, n_var, -1)  # (B, V, S): n x the window's variance
    level = flat.pow(2).mean(dim=(1, 2)).reshape(b, n_var, 1)  # the whole map's variance
    informative = spread > FLAT_WINDOW * n * level
    return torch.where(informative, spread.clamp_min(0.0).sqrt(), math.inf)


def _window_scores(ref_rows: torch.Tensor, bank: torch.Tensor, crop: int) -> torch.Tensor:
    """(B, K, V, S): Pearson correlation of each query's K reference crops `ref_rows` (B, K, crop^2; centred and
    normalised) with every crop-sized window (S shifts, row-major) of each of its V variants `bank` (B, V, H, W).

    A centred reference makes the window's own mean drop out of the dot product, so the correlations are the
    windows' dot products (`_window_dots`) divided by the windows' centred norms (`_window_norms`; a flat window
    resembles nothing: 0)."""
    return (_window_dots(ref_rows, bank, crop) / _window_norms(bank, crop)[:, None]).clamp_(-1.0, 1.0)


# |corr(x, x^2)| within a window above this: the square adds nothing the fit could tell from the window itself
COLLINEAR = 1.0 - 1e-6


def _curve_window_scores(ref_rows: torch.Tensor, bank: torch.Tensor, crop: int) -> torch.Tensor:
    """(B, K, V, S): as `_window_scores`, but each reference crop's multiple correlation with the window AND its
    square (the best quadratic intensity curve, not only gain and offset): a copy under a gamma or another smooth
    monotone curve scores as a copy under a gain does under Pearson. Where the linear correlation is not positive
    it is kept as it is (an inverted image is not made a copy by a curve).

    The multiple correlation comes from the two correlations r1 (window), r2 (its square) and r12 (between them);
    they must describe the same window: where the squared window is flat to `_window_norms` (r2 scored 0 while r12
    is not), or the square is the window itself up to gain and offset, the curve adds nothing and the score is
    r1. Mixing the two had scored a near-empty slice 1.0 against a stranger (plain correlation 0.71, true multiple
    correlation 0.75): an honest patient confirmed as a copy (2026-12-07, honest seed 15)."""
    b, n_var, h, w = bank.shape
    n = crop * crop
    centred = bank - bank.mean(dim=(2, 3), keepdim=True)  # the square of a centred map: a better-conditioned basis
    r1 = _window_scores(ref_rows, centred, crop)
    squared = centred * centred
    square_norms = _window_norms(squared, crop)
    r2 = (_window_dots(ref_rows, squared, crop) / square_norms[:, None]).clamp_(-1.0, 1.0)
    flat = centred.reshape(b * n_var, h, w).double()
    s1, s2, s3, s4 = (window_sums(flat ** k, crop) for k in (1, 2, 3, 4))
    v1 = (s2 - s1 * s1 / n).clamp_min(1e-16)
    v2 = (s4 - s2 * s2 / n).clamp_min(1e-16)
    r12 = ((s3 - s1 * s2 / n) / (v1 * v2).sqrt()).clamp(-1.0, 1.0).to(bank.dtype).reshape(b, 1, n_var, -1)
    usable = torch.isfinite(square_norms)[:, None] & (r12.abs() < COLLINEAR)
    r12 = torch.where(usable, r12, 0.0)
    explained = torch.where(usable, (r1 * r1 + r2 * r2 - 2.0 * r1 * r2 * r12) / (1.0 - r12 * r12), r1 * r1)
    return torch.where(r1 > 0, torch.maximum(explained.clamp(0.0, 1.0).sqrt(), r1), r1)


def _reference_rows(reference: np.ndarray, size: int, max_shift: int) -> tuple[torch.Tensor, int]:
    if max_shift < 0 or 2 * max_shift >= size - 2:
        raise ValueError(f"max_shift {max_shift} does not fit {size}-px slices")
    m, crop = int(max_shift), size - 2 * int(max_shift)
    ref = _as_tensor(reference, size)[:, m:m + crop, m:m + crop].reshape(len(reference), -1)
    return _normalise_rows(ref, 1), crop


def _check_candidates(cand: np.ndarray, n_queries: int) -> np.ndarray:
    cand = np.asarray(cand, dtype=np.int64)
    if cand.ndim != 2 or len(cand) != n_queries:
        raise ValueError(f"candidates must be (Q, K) for {n_queries} queries, got shape {cand.shape}")
    return cand


def robust_similarity(queries: np.ndarray, reference: np.ndarray, cand: np.ndarray, size: int = 32,
                      max_shift: int = 3, rotations: tuple[float, ...] = (-5.0, 0.0, 5.0),
                      flips: tuple[str, ...] = ("none", "h"), chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Per query slice: the best correlation to any of its candidate reference slices over every variant and shift
    within `max_shift` px, and the index of that reference slice.

    The reference's central (size - 2 max_shift)^2 crop is correlated with each same-size window of the query
    variant, both centred and normalised over the window: a Pearson correlation on real pixels only.
    """
    ref, crop = _reference_rows(reference, size, max_shift)
    cand = _check_candidates(cand, len(queries))
    q_all = _as_tensor(queries, size)

    def score(start, stop, idx):
        bank = variants(q_all[start:stop], rotations, flips)
        return _window_scores(ref[idx], bank, crop).flatten(2).max(dim=2).values

    return _best_candidate(cand, chunk, score)


def _best_candidate(cand: np.ndarray, chunk: int, score) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the best of `score(start, stop, idx)` -> (B, K) over its candidates `idx` (chunks of queries), and
    the reference slice that gave it."""
    best = np.empty(len(cand), dtype=np.float64)
    best_ref = np.empty(len(cand), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(cand), chunk):
            stop = min(start + chunk, len(cand))
            idx = torch.from_numpy(cand[start:stop])
            value, where = score(start, stop, idx).max(dim=1)
            best[start:stop] = value.double().numpy()
            best_ref[start:stop] = idx.gather(1, where[:, None])[:, 0].numpy()
    return best, best_ref


def candidate_spectrum_similarity(cand: np.ndarray, query_spectra, reference_spectra: np.ndarray,
                                  block: int = 32) -> torch.Tensor:
    """(Q, K): per query, its best spectrum similarity (inner product) to each of its K candidate reference slices
    `cand` over the transforms whose spectra `query_spectra` yields, one (Q, D) array per transform.

    Only the candidates' products are formed: each block of `block` consecutive queries (a patient's slices share
    most candidates) against the union of its candidates, one batched product per transform (at the demo's size
    about 8 times fewer products than every query against every reference slice)."""
    n_query, k = cand.shape
    ref = torch.from_numpy(np.ascontiguousarray(reference_spectra, dtype=np.float32))
    unions, position = [], np.empty_like(cand)
    for start in range(0, n_query, block):
        union, inverse = np.unique(cand[start:start + block], return_inverse=True)
        unions.append(union)
        position[start:start + block] = inverse.reshape(-1, k)
    width = max(len(u) for u in unions)
    columns = torch.from_numpy(np.stack([np.resize(u, width) for u in unions]))  # short unions repeat: never read
    ref_blocks = ref[columns].transpose(1, 2)  # (blocks, D, width)
    padded = len(unions) * block
    rows = torch.from_numpy(position)
    closest = torch.full((n_query, k), -np.inf)
    for spectra in query_spectra:
        q = F.pad(torch.from_numpy(spectra), (0, 0, 0, padded - n_query)).view(len(unions), block, -1)
        sims = torch.bmm(q, ref_blocks).reshape(padded, width)[:n_query]
        closest = torch.maximum(closest, sims.gather(1, rows))
    return closest


def registered_similarity(queries: np.ndarray, reference: np.ndarray, cand: np.ndarray, size: int = 32,
                          max_shift: int = 3, angle_step: float = 12.0, scales: tuple[float, ...] = (1.0,),
                          coarse_slices: int = 12, fine_slices: int = 4,
                          fine_angles: tuple[float, ...] = (-4.0, 0.0, 4.0),
                          fine_scales: tuple[float, ...] = (0.96, 1.0, 1.04), chunk: int = 64,
                          return_transform: bool = False, undone: list | None = None,
                          curve: bool = False) -> tuple[np.ndarray, ...]:
    """Per query slice: the best correlation to any candidate reference slice over similarity transforms of any
    angle, either handedness and the zooms of `scales`, and the index of that reference slice; with
    `return_transform`, also (Q, 3) [flipped, degrees, zoom]: `warp` of the query by it matches the reference.

    Coarse to fine, on fewer candidates at each step: the `coarse_slices` candidates whose spectra come closest to
    the query's under any rotation and zoom of the spectrum bank; among them, at half resolution (shifts of 1 px
    there), every rotation `angle_step` apart, flipped or not, at every zoom; then at full resolution (shifts up
    to `max_shift`) a grid around the best coarse transform, on the `fine_slices` candidates that scored best
    coarsely. The value is a Pearson correlation at full resolution of the reference's central crop with a window
    of the transformed query, as in `robust_similarity`. `undone`: the queries' spectra under SPECTRUM_ANGLES x
    `scales` as `transformed_candidates(keep_spectra=...)` kept them (computed here when not given or empty). With
    `curve`, the fine step scores the quadratic intensity curve (`_curve_window_scores`) instead of gain and offset.
    """
    cand = _check_candidates(cand, len(queries))
    if cand.shape[1] > coarse_slices:
        closest = candidate_spectrum_similarity(cand, undone or undone_spectra(queries, size, SPECTRUM_ANGLES, scales),
                                                spectrum_vectors(reference, size))
        cand = np.take_along_axis(cand, closest.topk(coarse_slices, dim=1).indices.numpy(), axis=1)
    half = size // 2
    ref_coarse, crop_coarse = _reference_rows(reference, half, 1)
    ref_fine, crop_fine = _reference_rows(reference, size, max_shift)
    q_fine = _as_tensor(queries, size)
    q_coarse = _as_tensor(queries, half)
    angles = torch.arange(0.0, 360.0, float(angle_step))
    grid = [(flip, float(a), float(s)) for flip in (False, True) for a in angles for s in scales]
    flip_c = torch.tensor([g[0] for g in grid])
    angle_c = torch.tensor([g[1] for g in grid])
    scale_c = torch.tensor([g[2] for g in grid])
    offsets = [(float(da), float(ds)) for da in fine_angles for ds in fine_scales]
    d_angle = torch.tensor([o[0] for o in offsets])
    d_scale = torch.tensor([o[1] for o in offsets])
    n_fine = min(int(fine_slices), cand.shape[1])
    fine_scores = _curve_window_scores if curve else _window_scores
    best = np.empty(len(queries), dtype=np.float64)
    best_ref = np.empty(len(queries), dtype=np.int64)
    transform = np.empty((len(queries), 3), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(queries), chunk):
            stop = min(start + chunk, len(queries))
            b = stop - start
            idx = torch.from_numpy(cand[start:stop])
            bank = warp(q_coarse[start:stop], flip_c, angle_c, scale_c)
            coarse = _window_scores(ref_coarse[idx], bank, crop_coarse).max(dim=3).values  # (B, K, V)
            per_slice, per_variant = coarse.max(dim=2)  # (B, K)
            keep = per_slice.topk(n_fine, dim=1).indices  # (B, n_fine) positions in the candidate list
            top = per_variant.gather(1, keep[:, :1])[:, 0]  # the best coarse transform of each query
            flip = flip_c[top][:, None].expand(b, len(offsets))
            angle = angle_c[top][:, None] + d_angle[None]
            scale = scale_c[top][:, None] * d_scale[None]
            fine_idx = idx.gather(1, keep)
            fine = fine_scores(ref_fine[fine_idx], warp(q_fine[start:stop], flip, angle, scale), crop_fine)
            per_candidate, at = fine.flatten(2).max(dim=2)  # (B, n_fine): best over transforms and shifts
            value, where = per_candidate.max(dim=1)
            best[start:stop] = value.double().numpy()
            best_ref[start:stop] = fine_idx.gather(1, where[:, None])[:, 0].numpy()
            variant = at.gather(1, where[:, None])[:, 0] // fine.shape[-1]
            rows = torch.arange(b)
            transform[start:stop] = torch.stack([flip[rows, variant].double(), angle[rows, variant].double(),
                                                 scale[rows, variant].double()], dim=1).numpy()
    return (best, best_ref, transform) if return_transform else (best, best_ref)


def patch_similarity(queries: np.ndarray, reference: np.ndarray, cand: np.ndarray, size: int = 32, grid: int = 4,
                     max_shift: int = 2, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per query slice: the best, over its candidate reference slices, of the mean over a `grid` x `grid` tiling
    of the reference's central crop of each tile's best Pearson correlation with the query within `max_shift` px,
    each tile shifted on its own; and the index of that reference slice.

    A copy under a smooth warp is, tile by tile, a shifted copy, and a small tile's correlation follows the
    patient's own texture more than the heart's common layout: real new patients score lower here than in the
    whole-slice search while mildly warped copies keep their score."""
    cand = _check_candidates(cand, len(queries))
    m = int(max_shift)
    tile = (size - 2 * m) // grid
    if m < 0 or tile < 3:
        raise ValueError(f"a {grid} x {grid} grid with shifts of {max_shift} px does not fit {size}-px slices")
    q_all, r_all = _as_tensor(queries, size), _as_tensor(reference, size)
    corners = [(m + gy * tile, m + gx * tile) for gy in range(grid) for gx in range(grid)]
    rows = [_normalise_rows(r_all[:, y0:y0 + tile, x0:x0 + tile].reshape(len(r_all), -1), 1) for y0, x0 in corners]

    def score(start, stop, idx):
        total = torch.zeros(idx.shape, dtype=q_all.dtype)
        for (y0, x0), tile_rows in zip(corners, rows):
            region = q_all[start:stop, None, y0 - m:y0 + tile + m, x0 - m:x0 + tile + m]
            total += _window_scores(tile_rows[idx], region, tile)[:, :, 0].max(dim=2).values
        return total / len(corners)

    return _best_candidate(cand, chunk, score)
