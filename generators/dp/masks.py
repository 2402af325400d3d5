"""The mask generator fitted with differential privacy (Gaussian mechanism), in the same `MaskModel` form.

The plain model (generators/masks.py) is a Gaussian over per-patient shape vectors (polar outlines at 9 positions,
ED and ES, and the slice count). Its mean, scales, principal components and group means are all read from the
patients, so none of them may be released as they are. Under DP:

- every vector is expressed relative to a PUBLIC reference heart (textbook sizes in millimetres, converted with the
  preprocessing field of view) and projected onto a PUBLIC smooth basis: per outline, the mean and first harmonic
  around the heart's axis times the first three cosines from base to apex (85 coefficients instead of 1765), so
  the noise is spread over few numbers;
- release 1: the mean of those coefficients, each patient's vector clipped to norm MEAN_CLIP (L2 sensitivity
  MEAN_CLIP), plus Gaussian noise;
- release 2: the spread around that mean, as the energy of each block of coefficients (centre, LV, epicardium,
  RV start, RV width, slice count), each patient's deviation clipped to norm SPREAD_CLIP (sensitivity
  SPREAD_CLIP ** 2), plus Gaussian noise; within a block the variance follows a public decay over frequencies;
- groups, per-group means and the observed slice range are not released: one population, slice counts within a
  public range.
Both releases join the privacy account's history, so the ledger's epsilon covers the mask generator too. The number
of patients is treated as public, as Opacus does with the dataset size.
"""
from __future__ import annotations

import numpy as np

from ..masks import FEATURES_PER_SLICE, N_POSITIONS, N_SECTORS, PHASE_ORDER, MaskModel, patient_vectors

MEAN_CLIP = 2.0  # L2 norm, in fractions of the field of view (a typical patient is ~1.2 from the population mean)
SPREAD_CLIP = 1.5
COUNT_SCALE = 40.0  # the slice count enters the vector as count / COUNT_SCALE, comparable to the outlines
PUBLIC_SLICE_RANGE = (6, 18)  # short-axis slices base to apex in clinical cines (ACDC: 6-18)
POSITION_TERMS = 3
HARMONICS = 1
MIN_PATIENTS = 3

# Textbook adult heart, millimetres (ED; ES scales the cavity and thickens the wall): LV cavity radius at the base
# (end-diastolic diameter ~50-55 mm), tapering towards the apex; myocardial wall ~9 mm; the RV cavity's width
# averaged around the heart (~25 mm over a third of the circle at the base, vanishing at the apex; its side depends
# on the image orientation, so the reference spreads it evenly).
REF_LV_RADIUS_MM = 27.0
REF_APEX_TAPER = 0.8
REF_WALL_MM = {"ED": 9.0, "ES": 12.0}
REF_ES_CAVITY = 0.72
REF_RV_WIDTH_MM = 9.0
REF_SLICES = 10
BLOCKS = ("centre", "endo", "epi", "rv_in", "rv_w", "count")


def _cosines(n: int, terms: int) -> np.ndarray:
    """(n, terms) orthonormal DCT-II columns over n points: constant, then slower-to-faster cosines."""
    j = np.arange(n)
    cols = [np.cos(np.pi * k * (j + 0.5) / n) for k in range(terms)]
    cols = [c / np.linalg.norm(c) for c in cols]
    return np.stack(cols, axis=1)


def _harmonics(n: int, harmonics: int) -> np.ndarray:
    """(n, 1 + 2 * harmonics) orthonormal Fourier columns over n sectors."""
    theta = -np.pi + (np.arange(n) + 0.5) * (2 * np.pi / n)
    cols = [np.ones(n)]
    for h in range(1, harmonics + 1):
        cols += [np.cos(h * theta), np.sin(h * theta)]
    return np.stack([c / np.linalg.norm(c) for c in cols], axis=1)


def public_basis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The public orthonormal basis (d, m) of shape vectors, each column's block index, and its prior weight."""
    dim = len(PHASE_ORDER) * N_POSITIONS * FEATURES_PER_SLICE + 1
    pos = _cosines(N_POSITIONS, POSITION_TERMS)
    ang = _harmonics(N_SECTORS, HARMONICS)
    columns, blocks, weights = [], [], []

    def add(vector, block, order):
        columns.append(vector)
        blocks.append(BLOCKS.index(block))
        weights.append(1.0 / (1.0 + order) ** 2)  # public prior: smoother modes vary more

    for p in range(len(PHASE_ORDER)):
        for f in range(2):  # the centre's row and column
            for a in range(POSITION_TERMS):
                v = np.zeros((len(PHASE_ORDER), N_POSITIONS, FEATURES_PER_SLICE))
                v[p, :, f] = pos[:, a]
                add(np.append(v.ravel(), 0.0), "centre", a)
        for q, block in enumerate(("endo", "epi", "rv_in", "rv_w")):
            start = 2 + q * N_SECTORS
            for a in range(POSITION_TERMS):
                for h in range(ang.shape[1]):
                    v = np.zeros((len(PHASE_ORDER), N_POSITIONS, FEATURES_PER_SLICE))
                    v[p, :, start:start + N_SECTORS] = np.outer(pos[:, a], ang[:, h])
                    add(np.append(v.ravel(), 0.0), block, a + (h + 1) // 2)
    count = np.zeros(dim)
    count[-1] = 1.0
    add(count, "count", 0)
    basis = np.stack(columns, axis=1)
    blocks, weights = np.array(blocks), np.array(weights)
    for b in range(len(BLOCKS)):  # weights sum to one within a block
        weights[blocks == b] /= weights[blocks == b].sum()
    return basis, blocks, weights


def reference_vector(fov_mm: float) -> np.ndarray:
    """A public reference patient's shape vector: a centred, tapering textbook heart in fractions of the FOV."""
    pos = np.linspace(0.0, 1.0, N_POSITIONS)
    parts = []
    for phase in PHASE_ORDER:
        cavity = REF_LV_RADIUS_MM * (REF_ES_CAVITY if phase == "ES" else 1.0) * (1 - REF_APEX_TAPER * pos)
        epi = cavity + REF_WALL_MM[phase]
        rows = []
        for j in range(N_POSITIONS):
            rows.append(np.concatenate([[0.5 * fov_mm, 0.5 * fov_mm], np.full(N_SECTORS, cavity[j]),
                                        np.full(N_SECTORS, epi[j]), np.full(N_SECTORS, epi[j]),
                                        np.full(N_SECTORS, REF_RV_WIDTH_MM * (1 - pos[j]))]) / fov_mm)
        parts.append(np.concatenate(rows))
    return np.concatenate(parts + [[REF_SLICES]])


def _count_scaling(dim: int) -> np.ndarray:
    s = np.ones(dim)
    s[-1] = COUNT_SCALE
    return s


def clip_rows(y: np.ndarray, bound: float) -> np.ndarray:
    """Scale each row down to L2 norm at most `bound` (the per-patient clipping that bounds the sensitivity)."""
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return y * np.minimum(1.0, bound / np.maximum(norms, 1e-12))


def fit_private_mask_model(slices, account) -> MaskModel:
    """A `MaskModel` from two Gaussian releases recorded in `account` (a generators.dp.engine.PrivacyAccount)."""
    x, _, _ = patient_vectors(slices)
    if len(x) < MIN_PATIENTS:
        raise ValueError(f"the mask generator needs at least {MIN_PATIENTS} patients annotated at ED and ES, "
                         f"got {len(x)}")
    n = len(x)
    fov_mm = float(slices.spacing_mm) * slices.size
    basis, blocks, weights = public_basis()
    ref = reference_vector(fov_mm)
    scaling = _count_scaling(len(ref))
    y = ((x - ref) / scaling) @ basis  # (n, m) coefficients of each patient's deviation from the reference
    mean_coef = account.release(clip_rows(y, MEAN_CLIP).sum(axis=0), MEAN_CLIP,
                                "mask model: mean shape coefficients") / n
    dev = clip_rows(y - mean_coef, SPREAD_CLIP)
    energy = np.stack([(dev[:, blocks == b] ** 2).sum(axis=1) for b in range(len(BLOCKS))], axis=1)
    block_var = np.maximum(account.release(energy.sum(axis=0), SPREAD_CLIP ** 2,
                                           "mask model: spread per block") / n, 0.0)
    model = MaskModel()
    model.size = slices.size
    model.n_patients = n
    model.slice_range = PUBLIC_SLICE_RANGE
    model.mean = ref + scaling * (basis @ mean_coef)
    model.scale = scaling
    model.components = basis.T.copy()
    model.sd = np.sqrt(block_var[blocks] * weights)
    model.groups = ["unknown"]
    model.group_weights = np.ones(1)
    model.group_means = np.zeros((1, len(ref)))
    return model
