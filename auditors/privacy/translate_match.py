"""Copies moved far: the best Pearson correlation of a slice to a reference slice over translations of up to
`max_translation` px, on the two slices' overlap.

The small search of robust_match.py compares the reference's central crop with the query's windows within
`copy_max_shift` px (3 at 32 px); a training patient moved by 5 px (a random crop a generator memorised, a stack
placed elsewhere in its field of view) lies outside it, and its candidates are not found either: the Hann-windowed
central crop the spectrum space reads changes with a large shift (measured 2026-12-06 on the phantom at 32 px: 10
training patients moved by (5, -4) px had their source slice among the candidates for 4% of their slices, and every
copy view scored them below every real new patient; 0 confirmed).

Here candidates come from the spectrum of the whole slice under a Tukey window (flat over its middle 70%), which a
shift changes little (the same copies: the source slice among the candidates for 100% of the slices), and each pair
is correlated over every translation of up to `max_translation` px, on the overlap of the two slices only (no padding
enters it; at 8 px the overlap keeps at least 56% of a 32-px slice): coarsely at half the size on every candidate,
then at full size on the `fine_slices` best. The correlation on the overlap at each translation comes from five
convolutions (the overlap's sums of q, q^2, r, r^2 and q r), as in masked normalised cross-correlation (Padfield,
IEEE TIP 2012).

Turned as well as moved (a memorised crop of a turned stack; measured 2026-12-06 on the phantom at 32 px, 100
training patients, 10 of them turned by 10 degrees and moved by (5, -4) px: the source slice among the Tukey-space
candidates for 69% of the slices, 75% with the spectra turned back by every 5 degrees): `moved_candidates` searches
directly, at half size, every reference slice's central crop against every window of each query turned by every
angle of a bank (FAISS, inner product of normalised rows), and lists each query's best matches and the turn that
gave its best; the overlap correlation then tries no turn and that turn with its neighbours (the query's corners
that the turn leaves empty kept out of the overlap). The registered search of robust_match.py turns by any angle but
forgives shifts of up to 3 px; this covers the bank's turns with moves of up to `max_translation` px. The bank holds
the same turns about the slice's other orientations too (`translation_poses`: mirrored, turned by quarter turns): a
generator trained with flips, quarter turns and crops gives its training slices back mirrored or turned, and moved.
Zoomed as well (a memorised random resized crop; measured 2026-12-07 on the phantom at 32 px, 10 training patients
zoomed by 1.15 and moved by (5, -4) px: the source slice among the direct search's candidates for 100% of the slices,
but scored 0.84 unzoomed, below the honest neighbours it was ranked with; 1 of 10 confirmed, and 0 of 10 shrunk by
0.87): the overlap correlation also tries the query magnified by the registered search's zoom bank, coarsely on the
direct search's candidates (unturned and under the turn) and at full size by each candidate's best coarse zoom,
there on the candidate in the inverse pose (resampled as the copy was: 10 of 10 confirmed instead of 2). Turned AND
zoomed (a memorised random affine augmentation): the direct search turns without zooming, so the turn it gives such a
copy can be the bank's next one; the zooms are tried under that turn and its two neighbours in the bank, at full
size the chosen pose also unturned and half a bank step either side (measured 2026-12-07 on phantom slices turned
by 10 degrees, zoomed by 1.15 and moved: median score to the source 0.969 -> 0.980).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .neighbours import NeighbourIndex
from .robust_match import (FLAT_WINDOW, _as_tensor, _best_candidate, _check_candidates, _chosen_slices,
                           _normalise_rows, _patient_votes, _reference_rows)

ANGLE_STEP = 5.0  # degrees between the turns of the bank: at half size a 2.5-degree miss moves a corner < 0.4 px


def overlap_correlation(queries: torch.Tensor, references: torch.Tensor, max_translation: int,
                        query_support: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K, S): the Pearson correlation of each query (B, H, W) with each of its K references (B, K, H, W) on their
    overlap, the reference moved by every (dy, dx) in [-T, T]^2 (S = (2T + 1)^2, row-major from (-T, -T)): the
    query's pixel (y + dy, x + dx) against the reference's (y, x). `query_support` (B, H, W) of 0 and 1: the query's
    pixels that count (a turned slice's empty corners do not); None: all. Flat overlaps score 0."""
    b, k, h, w = references.shape
    t = int(max_translation)
    whole = query_support is None  # every query pixel counts: the reference's sums need one shared support
    support = torch.ones_like(queries) if whole else query_support.to(queries.dtype)
    # centred, so that the overlap's sums stay small beside its spread (float32 is then exact enough: the flat
    # floor below sits far above the rounding of the variances)
    area = support.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)
    q = (queries - (queries * support).sum(dim=(1, 2), keepdim=True) / area) * support
    r = references - references.mean(dim=(2, 3), keepdim=True)
    pad = (t, t, t, t)
    q_pad = F.pad(q, pad)[None]  # (1, B, H + 2T, W + 2T): zeros outside the query
    s_pad = F.pad(support, pad)[None]
    ones = torch.ones((1, 1, h, w), dtype=q.dtype)
    r_kernels, rr_kernels = r.reshape(b * k, 1, h, w), (r * r).reshape(b * k, 1, h, w)
    sum_qr = F.conv2d(q_pad, r_kernels, groups=b).reshape(b, k, -1)
    sum_q = F.conv2d(q_pad.transpose(0, 1), ones).reshape(b, 1, -1)
    sum_qq = F.conv2d((q_pad * q_pad).transpose(0, 1), ones).reshape(b, 1, -1)
    if whole:  # one support for all: plain convolutions, much faster on a CPU than grouped ones
        s_pad = s_pad[:, :1]
        n = F.conv2d(s_pad, ones).reshape(1, 1, -1)  # overlap pixels per translation
        sum_r = F.conv2d(s_pad, r_kernels).reshape(b, k, -1)
        sum_rr = F.conv2d(s_pad, rr_kernels).reshape(b, k, -1)
    else:
        n = F.conv2d(s_pad.transpose(0, 1), ones).reshape(b, 1, -1)
        sum_r = F.conv2d(s_pad, r_kernels, groups=b).reshape(b, k, -1)
        sum_rr = F.conv2d(s_pad, rr_kernels, groups=b).reshape(b, k, -1)
    n = n.clamp_min(1.0)
    var_q = sum_qq - sum_q * sum_q / n
    var_r = sum_rr - sum_r * sum_r / n
    # flat to FLAT_WINDOW of its slice's variance (a padded border, an edge-extended shift): no correlation to speak of
    level_q = ((q * q).sum(dim=(1, 2)) / area[:, 0, 0]).reshape(b, 1, 1)
    level_r = (r * r).mean(dim=(2, 3)).reshape(b, k, 1)
    informative = (var_q > FLAT_WINDOW * n * level_q) & (var_r > FLAT_WINDOW * n * level_r)
    denom = torch.where(informative, var_q * var_r, 1.0).sqrt()
    corr = ((sum_qr - sum_q * sum_r / n) / denom).clamp(-1.0, 1.0)
    return torch.where(informative, corr, 0.0)


def turned(images: torch.Tensor, angles: torch.Tensor, mirrored: torch.Tensor | None = None,
           zooms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V, H, W) each slice turned by its V angles (degrees; (V,) shared or (B, V) per slice, as `warp`), and the
    (B, V, H, W) support: 1 where the turned slice's pixel came from inside the slice. `mirrored` (bool, the shape
    of `angles`): those slices are mirrored left-right before their turn (as `robust_match.warp`'s flip); `zooms`
    (the shape of `angles`): then magnified by that factor about the centre (< 1 shrinks, leaving the border out of
    the support)."""
    b, v = len(images), angles.shape[-1]
    h, w = images.shape[-2:]
    a = torch.deg2rad(angles.to(images.dtype)).reshape(-1)
    f = (torch.ones_like(a) if mirrored is None
         else torch.where(mirrored.reshape(-1), -1.0, 1.0).to(images.dtype))
    c = torch.ones_like(a) if zooms is None else 1.0 / zooms.to(images.dtype).reshape(-1)
    # output pixel -> input pixel: undo the zoom, the turn, then the mirror (x -> -x)
    theta = torch.stack([torch.stack([c * f * torch.cos(a), -c * f * torch.sin(a), torch.zeros_like(a)], -1),
                         torch.stack([c * torch.sin(a), c * torch.cos(a), torch.zeros_like(a)], -1)], -2)
    grid = F.affine_grid(theta, (len(theta), 1, h, w), align_corners=False)
    shared = angles.ndim == 1
    if shared:
        grid = grid[None].expand(b, v, h, w, 2)
    grid = grid.reshape(b * v, h, w, 2)
    src = images[:, None].expand(b, v, h, w).reshape(b * v, 1, h, w)
    # bicubic: a copy that was itself interpolated when it was turned loses less to a second interpolation here
    out = F.grid_sample(src, grid, mode="bicubic", padding_mode="border", align_corners=False).reshape(b, v, h, w)
    # the inside of the slice turned the same way: weights of 1 only where every source pixel is inside
    inside = F.grid_sample(torch.ones((len(theta), 1, h, w), dtype=images.dtype), grid[:len(theta)] if not shared
                           else grid[:v], mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    inside = (inside > 1.0 - 1e-4).to(images.dtype).reshape(1 if shared else b, v, h, w)
    return out, inside.expand(b, v, h, w)


def over_poses(queries: torch.Tensor, references: torch.Tensor, angles: torch.Tensor, max_translation: int,
               mirrored: torch.Tensor, zooms: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V, K): the best overlap correlation over the translations of each query (B, H, W) under each of its V
    poses (`turned`: `angles`, `mirrored`, `zooms`, each (B, V)) with each of its K references (B, K, H, W)."""
    b, v = angles.shape
    k, h, w = references.shape[1:]
    variants, support = turned(queries, angles, mirrored, zooms)
    references = references[:, None].expand(b, v, k, h, w).reshape(b * v, k, h, w)
    corr = overlap_correlation(variants.reshape(b * v, h, w), references, max_translation,
                               support.reshape(b * v, h, w))
    return corr.max(dim=2).values.reshape(b, v, k)


def translation_angles(max_angle: float, step: float = ANGLE_STEP) -> tuple[float, ...]:
    """The turn bank of the translation search: 0 and multiples of `step` up to +-`max_angle` (degrees)."""
    if max_angle < 0:
        raise ValueError(f"max_angle must be >= 0, got {max_angle}")
    n = int(math.floor(max_angle / step + 1e-9))
    return tuple(float(step * i) for i in range(-n, n + 1))


ORIENTATIONS = (1, 4, 8)  # the slice as it is; the rectangle's symmetries; the square's


def translation_poses(angles: tuple[float, ...], orientations: int = 1) -> tuple[tuple[bool, float], ...]:
    """(mirrored, degrees) of every pose the direct search tries: the turns of `angles` about each of `orientations`
    starting points: 1, the slice as it is; 4, also mirrored left-right, mirrored up-down (a left-right mirror turned
    by 180 degrees) and turned by 180 degrees (the symmetries of a rectangle); 8, also turned by 90 and 270 degrees
    and transposed either way (the symmetries of a square). Flips and quarter turns are the usual augmentations of an
    image generator, which may give a training slice back mirrored or turned, and moved (measured 2026-12-07 on the
    phantom at 32 px: 10 training patients mirrored left-right and moved by (5, -4) px, or turned by 90 degrees and
    moved, passed the memorisation auditor with 0 confirmed when the search turned by the bank alone)."""
    if orientations not in ORIENTATIONS:
        raise ValueError(f"orientations must be one of {ORIENTATIONS}, got {orientations}")
    starts = {1: (0.0,), 4: (0.0, 180.0), 8: (0.0, 90.0, 180.0, 270.0)}[orientations]
    flips = (False,) if orientations == 1 else (False, True)
    return tuple((m, (base + a + 180.0) % 360.0 - 180.0) for m in flips for base in starts
                 for a in sorted(set(float(x) for x in angles)) or [0.0])


def moved_candidates(queries: np.ndarray, query_codes: np.ndarray, reference: np.ndarray,
                     reference_codes: np.ndarray, angles: tuple[float, ...], max_translation: int = 6, k: int = 16,
                     patients: int = 2, own: int = 4, size: int = 32, per_window: int = 4, chunk: int = 256,
                     ivf_lists: int = 0, nprobe: int = 16, orientations: int = 1
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates for copies turned AND moved, which neither spectrum space finds (measured 2026-12-06 on the phantom,
    100 training patients, 10 copied: turned by 10 degrees and moved by (5, -4) px, the source slice among the
    Tukey-space candidates for 69% of the slices, 75% with the spectra turned back by the bank): ((Q, C) reference
    slice indices as `robust_match.candidates`, (Q,) the turn of each query's best match and (Q,) whether it was
    mirrored: the poses of `translation_poses` about `orientations` starting points).

    A direct search at half size: every reference slice's central crop (the slice less `max_translation` px each
    side, normalised) is an entry of a FAISS inner-product index, and every same-size window of each query turned by
    every angle of `angles` is a query of it (the Pearson correlation of the crop with the window). Each query slice
    keeps its `k` best reference slices over its windows; its patient's slices vote for patients as in `candidates`.
    The work grows with queries x reference slices (49 windows x the bank's turns per query): `ivf_lists` > 0 makes
    the index approximate (FAISS IVF, `nprobe` lists visited) for cohorts of thousands of patients."""
    query_codes = np.asarray(query_codes, dtype=np.int64)
    reference_codes = np.asarray(reference_codes, dtype=np.int64)
    half, t = size // 2, int(max_translation) // 2
    ref_rows, crop = _reference_rows(reference, half, t)
    index = NeighbourIndex(ref_rows.numpy(), ivf_lists=ivf_lists, nprobe=nprobe)
    poses = translation_poses(angles, orientations)
    bank = torch.tensor([a for _, a in poses])
    flips = torch.tensor([m for m, _ in poses])
    q = _as_tensor(queries, half)
    k = min(int(k), len(reference))
    nearest = np.empty((len(queries), k), dtype=np.int64)
    best_angle = np.empty(len(queries), dtype=np.float64)
    best_mirrored = np.zeros(len(queries), dtype=bool)
    with torch.no_grad():
        for start in range(0, len(queries), chunk):
            # border values extended: windows stay informative
            variants, _ = turned(q[start:start + chunk], bank, flips)
            b, v = variants.shape[:2]
            windows = F.unfold(variants.reshape(b * v, 1, half, half), crop).transpose(1, 2)  # (B V, S, crop^2)
            n_windows = windows.shape[1]
            rows = _normalise_rows(windows.reshape(-1, crop * crop), 1).numpy()  # flat windows -> zeros: score 0
            sims, ids = index.search(rows, per_window)
            sims, ids = sims.reshape(b, v * n_windows * per_window), ids.reshape(b, -1)
            best = np.full((b, len(reference)), -np.inf, dtype=np.float32)
            found = ids >= 0  # an approximate index may return fewer than asked (-1)
            np.maximum.at(best, (np.broadcast_to(np.arange(b)[:, None], ids.shape)[found], ids[found]), sims[found])
            sims = np.where(found, sims, -np.inf)
            nearest[start:start + b] = np.argsort(-best, axis=1, kind="stable")[:, :k]
            top = sims.argmax(axis=1)  # the best window of each query: its turn
            best_angle[start:start + b] = bank.numpy()[top // (n_windows * per_window)]
            best_mirrored[start:start + b] = flips.numpy()[top // (n_windows * per_window)]
    n_query, n_ref = int(query_codes.max()) + 1, int(reference_codes.max()) + 1
    chosen = _chosen_slices(_patient_votes(nearest, query_codes, reference_codes, n_query, n_ref), query_codes,
                            reference_codes, patients)
    cand = np.concatenate([chosen, nearest[:, :min(own, k)]], axis=1) if own > 0 else chosen
    return cand, best_angle, best_mirrored


def translated_similarity(queries: np.ndarray, reference: np.ndarray, cand: np.ndarray, size: int = 32,
                          max_translation: int = 8, fine_slices: int = 4, chunk: int = 64,
                          turn: np.ndarray | None = None, turned_from: int = 0, nudge: float = 0.0,
                          mirrored: np.ndarray | None = None, zooms: tuple[float, ...] = (1.0,)
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per query slice: the best overlap correlation to any of its candidate reference slices `cand` (Q, K) over
    translations of up to `max_translation` px (at `size`), and the index of that reference slice.

    Turns: with `turn` (Q,) degrees, the candidates from column `turned_from` on are tried with the query turned by
    its `turn` and +- `nudge` (those before it unturned), and the fine step tries every fine candidate with no turn
    and with the turn that scored best coarsely, and the best of them also at that turn +- `nudge`; `mirrored` (Q,)
    bool: those queries are mirrored left-right before their turn. Coarse to fine: at half size (translations of up
    to half as many px) on every candidate, then at full size on the `fine_slices` candidates that scored best
    coarsely. `zooms`: the query is also magnified by each (under its turn), coarsely on the candidates of the moved
    block (every candidate without `turn`), and at full size by the zoom that scored best coarsely, for copies
    zoomed and moved (a memorised random resized crop)."""
    cand = _check_candidates(cand, len(queries))
    t = int(max_translation)
    if t < 1 or 2 * t > size // 2:
        raise ValueError(f"max_translation {max_translation} does not fit {size}-px slices (1 to {size // 4})")
    if turn is not None and np.shape(turn) != (len(queries),):
        raise ValueError(f"turn must hold one angle per query ({len(queries)}), got shape {np.shape(turn)}")
    q_fine, r_fine = _as_tensor(queries, size), _as_tensor(reference, size)
    q_coarse, r_coarse = _as_tensor(queries, size // 2), _as_tensor(reference, size // 2)
    n_fine = min(int(fine_slices), cand.shape[1])
    magnified = torch.tensor([z for z in zooms if abs(z - 1.0) > 1e-6], dtype=torch.float32)

    def unposed(scores):
        """The pose (zoom, turn, mirror flag) of every candidate of `scores` (B, K): as it is."""
        return torch.ones_like(scores), torch.zeros_like(scores), torch.zeros(scores.shape, dtype=torch.bool)

    def coarse_zooms(start, stop, refs, angles, flips, coarse):
        """Each candidate's coarse score `coarse` (B, K) against references `refs` (B, K, h, w), raised where one of
        the `magnified` zooms of its query under one of its turns `angles` (B, A) (mirrored where `flips` (B, A))
        scores higher; and the pose that gave each: (B, K) zoom (1: none), turn and mirror flag."""
        b, a, z = stop - start, angles.shape[1], len(magnified)
        pose = unposed(coarse)
        if not z:
            return coarse, pose
        angles, flips, scale = angles.repeat_interleave(z, 1), flips.repeat_interleave(z, 1), magnified.repeat(a)
        value, which = over_poses(q_coarse[start:stop], refs, angles, (t + 1) // 2, flips,
                                  scale[None].expand(b, a * z)).max(dim=1)
        better = value > coarse
        chosen = (scale[which], angles.gather(1, which), flips.gather(1, which))
        return torch.where(better, value, coarse), tuple(torch.where(better, c, p) for c, p in zip(chosen, pose))

    def candidate_posed(start, stop, fine_refs, angle, flip, zoom=None):
        """(B, n): each fine candidate (B, n, H, W) against its query at full size over the translations, the
        candidate in the inverse of the query's pose (`angle`, `flip`, `zoom`: (B, n)). A copy was resampled once
        when it was turned or zoomed; the candidate resampled the same way matches it where the query resampled back
        (smoothed twice, its source not at all) does not (measured 2026-12-07 on phantom slices moved by (5, -4) px
        after a 1.15 zoom: median correlation to their source 0.996 against 0.943; after a 15-degree turn, 10th
        percentile 0.994 against 0.906; other patients' slices 0.61-0.62 either way)."""
        b, n = angle.shape
        h, w = fine_refs.shape[-2:]
        query = q_fine[start:stop, None].expand(b, n, h, w).reshape(b * n, 1, h, w)
        # query ~ mirror^f turn(-a) zoom(1/z) reference, and mirror turn(-a) = turn(a) mirror
        back = torch.where(flip, angle, -angle)
        return over_poses(fine_refs.reshape(b * n, h, w), query, back.reshape(-1, 1), t, flip.reshape(-1, 1),
                          None if zoom is None else (1.0 / zoom).reshape(-1, 1)).reshape(b, n)

    def fine_zooms(start, stop, fine_refs, pose, fine):
        """`fine` (B, n) raised where the fine candidate (B, n, H, W) scores higher under the pose its coarse step
        chose (`pose`: (B, n) zoom, turn and mirror flag; zoom 1: not tried again), the candidate posed
        (`candidate_posed`)."""
        zoom, angle, flip = pose
        if not len(magnified) or bool((zoom == 1.0).all()):
            return fine
        value = candidate_posed(start, stop, fine_refs, angle, flip, zoom)
        if bool(((angle != 0) | flip).any()):  # a coarse turn can win by chance at half size: the zoom unturned too
            value = torch.maximum(value, candidate_posed(start, stop, fine_refs, torch.zeros_like(angle),
                                                         torch.zeros_like(flip), zoom))
        return torch.where(zoom != 1.0, torch.maximum(fine, value), fine)

    def picked(pose, top):
        return tuple(p.gather(1, top) for p in pose)

    if turn is None:
        def score(start, stop, idx):
            b = stop - start
            refs = r_coarse[idx]
            coarse = overlap_correlation(q_coarse[start:stop], refs, (t + 1) // 2).max(dim=2).values
            coarse, pose = coarse_zooms(start, stop, refs, torch.zeros((b, 1)), torch.zeros((b, 1), dtype=torch.bool),
                                        coarse)
            top = coarse.topk(n_fine, dim=1).indices
            fine_refs = r_fine[idx.gather(1, top)]
            fine = overlap_correlation(q_fine[start:stop], fine_refs, t).max(dim=2).values
            fine = fine_zooms(start, stop, fine_refs, picked(pose, top), fine)
            return torch.full_like(coarse, -math.inf).scatter_(1, top, fine)  # only the fine step's candidates count

        return _best_candidate(cand, chunk, score)

    turns = torch.as_tensor(np.asarray(turn, dtype=np.float32))
    if mirrored is not None and np.shape(mirrored) != (len(queries),):
        raise ValueError(f"mirrored must hold one flag per query ({len(queries)}), got shape {np.shape(mirrored)}")
    mirrors = torch.zeros(len(queries), dtype=torch.bool) if mirrored is None else torch.as_tensor(
        np.asarray(mirrored, dtype=bool))
    split = int(turned_from)
    if not 0 <= split < cand.shape[1]:
        raise ValueError(f"turned_from {turned_from} leaves no turned candidates among {cand.shape[1]}")
    nudges = torch.tensor([-nudge, 0.0, nudge] if nudge else [0.0])

    def over_turns(query, refs, angles, translation, flips):
        return over_poses(query, refs, angles, translation, flips[:, None].expand(angles.shape))

    def score(start, stop, idx):
        b = stop - start
        refs = r_coarse[idx]
        plain = (overlap_correlation(q_coarse[start:stop], refs[:, :split], (t + 1) // 2).max(dim=2).values
                 if split > 0 else refs.new_empty((b, 0)))
        # the moved block under the turn and its nudges (cheap at half size); the fine step keeps the best one
        around = turns[start:stop, None] + nudges
        flips = mirrors[start:stop]
        moved, which = over_turns(q_coarse[start:stop], refs[:, split:], around, (t + 1) // 2, flips).max(dim=1)
        best_turn = around.gather(1, which.gather(1, moved.argmax(dim=1, keepdim=True)))  # (B, 1)
        # the moved block zoomed too, unturned and under the turn and its neighbours in the bank: the direct search
        # turns without zooming, so a copy turned AND zoomed can be given the next turn of the bank (measured
        # 2026-12-07, 10 degrees and 1.15: the turns found spread from -10 to +5)
        zoom_turns = turns[start:stop, None] + 2.0 * nudges
        moved, moved_pose = coarse_zooms(start, stop, refs[:, split:],
                                         torch.cat([torch.zeros(b, 1), zoom_turns], 1),
                                         torch.cat([torch.zeros(b, 1, dtype=torch.bool),
                                                    flips[:, None].expand(zoom_turns.shape)], 1), moved)
        coarse = torch.cat([plain, moved], dim=1)
        pose = tuple(torch.cat([p, m], dim=1) for p, m in zip(unposed(plain), moved_pose))
        top = coarse.topk(n_fine, dim=1).indices
        fine_refs = r_fine[idx.gather(1, top)]
        fine = torch.maximum(overlap_correlation(q_fine[start:stop], fine_refs, t).max(dim=2).values,  # no turn
                             candidate_posed(start, stop, fine_refs, best_turn.expand(b, n_fine),
                                             flips[:, None].expand(b, n_fine)))
        chosen = picked(pose, top)
        fine = fine_zooms(start, stop, fine_refs, chosen, fine)
        if nudge:  # the best coarse candidate also half a bank step either side of the turn, at full size
            nudged = candidate_posed(start, stop, fine_refs[:, :1].expand(-1, 2, -1, -1), best_turn + nudges[[0, 2]],
                                     flips[:, None].expand(b, 2))
            fine[:, 0] = torch.maximum(fine[:, 0], nudged.amax(dim=1))
            zoom, angle, flip = (c[:, :1].expand(b, 2) for c in chosen)
            if bool((zoom != 1.0).any()):  # and zoomed: its zoom pose half a bank step either side of its turn
                nudged = candidate_posed(start, stop, fine_refs[:, :1].expand(-1, 2, -1, -1), angle + nudges[[0, 2]],
                                         flip, zoom).amax(dim=1)
                fine[:, 0] = torch.where(zoom[:, 0] != 1.0, torch.maximum(fine[:, 0], nudged), fine[:, 0])
        return torch.full_like(coarse, -math.inf).scatter_(1, top, fine)

    return _best_candidate(cand, chunk, score)
