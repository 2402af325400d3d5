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
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .robust_match import FLAT_WINDOW, _as_tensor, _best_candidate, _check_candidates


def overlap_correlation(queries: torch.Tensor, references: torch.Tensor, max_translation: int) -> torch.Tensor:
    """(B, K, S): the Pearson correlation of each query (B, H, W) with each of its K references (B, K, H, W) on their
    overlap, the reference moved by every (dy, dx) in [-T, T]^2 (S = (2T + 1)^2, row-major from (-T, -T)): the
    query's pixel (y + dy, x + dx) against the reference's (y, x). Flat overlaps score 0."""
    b, k, h, w = references.shape
    t = int(max_translation)
    # centred, so that the overlap's sums stay small beside its spread (float32 is then exact enough: the flat
    # floor below sits far above the rounding of the variances)
    q = queries - queries.mean(dim=(1, 2), keepdim=True)
    r = references - references.mean(dim=(2, 3), keepdim=True)
    pad = (t, t, t, t)
    q_pad = F.pad(q, pad)[None]  # (1, B, H + 2T, W + 2T): zeros outside the query
    support = F.pad(torch.ones((1, 1, h, w), dtype=q.dtype), pad)
    ones = torch.ones((1, 1, h, w), dtype=q.dtype)
    n = F.conv2d(support, ones)[0, 0].reshape(1, 1, -1)  # overlap pixels per translation
    sum_qr = F.conv2d(q_pad, r.reshape(b * k, 1, h, w), groups=b).reshape(b, k, -1)
    sum_q = F.conv2d(q_pad.transpose(0, 1), ones).reshape(b, 1, -1)
    sum_qq = F.conv2d((q_pad * q_pad).transpose(0, 1), ones).reshape(b, 1, -1)
    sum_r = F.conv2d(support, r.reshape(b * k, 1, h, w)).reshape(b, k, -1)
    sum_rr = F.conv2d(support, (r * r).reshape(b * k, 1, h, w)).reshape(b, k, -1)
    var_q = sum_qq - sum_q * sum_q / n
    var_r = sum_rr - sum_r * sum_r / n
    # flat to FLAT_WINDOW of its slice's variance (a padded border, an edge-extended shift): no correlation to speak of
    level_q = (q * q).mean(dim=(1, 2)).reshape(b, 1, 1)
    level_r = (r * r).mean(dim=(2, 3)).reshape(b, k, 1)
    informative = (var_q > FLAT_WINDOW * n * level_q) & (var_r > FLAT_WINDOW * n * level_r)
    denom = torch.where(informative, var_q * var_r, 1.0).sqrt()
    corr = ((sum_qr - sum_q * sum_r / n) / denom).clamp(-1.0, 1.0)
    return torch.where(informative, corr, 0.0)


def translated_similarity(queries: np.ndarray, reference: np.ndarray, cand: np.ndarray, size: int = 32,
                          max_translation: int = 8, fine_slices: int = 4, chunk: int = 64
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per query slice: the best overlap correlation to any of its candidate reference slices `cand` (Q, K) over
    translations of up to `max_translation` px (at `size`), and the index of that reference slice.

    Coarse to fine: at half size (translations of up to half as many px) on every candidate, then at full size on
    the `fine_slices` candidates that scored best coarsely."""
    cand = _check_candidates(cand, len(queries))
    t = int(max_translation)
    if t < 1 or 2 * t > size // 2:
        raise ValueError(f"max_translation {max_translation} does not fit {size}-px slices (1 to {size // 4})")
    q_fine, r_fine = _as_tensor(queries, size), _as_tensor(reference, size)
    q_coarse, r_coarse = _as_tensor(queries, size // 2), _as_tensor(reference, size // 2)
    n_fine = min(int(fine_slices), cand.shape[1])

    def score(start, stop, idx):
        coarse = overlap_correlation(q_coarse[start:stop], r_coarse[idx], (t + 1) // 2).max(dim=2).values  # (B, K)
        top = coarse.topk(n_fine, dim=1).indices
        fine = overlap_correlation(q_fine[start:stop], r_fine[idx.gather(1, top)], t).max(dim=2).values
        return torch.full_like(coarse, -math.inf).scatter_(1, top, fine)  # only the fine step's candidates count

    return _best_candidate(cand, chunk, score)
