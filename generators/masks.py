"""The mask generator: label-map stacks (base to apex, ED and ES) for new synthetic patients.

A statistical shape model fitted per patient, so that it can later be trained with patient-level DP:
1. every annotated slice is described around the heart's axis by a star-shaped (polar) outline in `N_SECTORS`
   angular sectors: the LV cavity radius, the epicardial radius, and where the RV cavity starts and how thick it is
   along each ray, each an area-preserving equivalent radius (a sector of angle d and area A has radius
   sqrt(2A/d)), plus the axis position;
2. each patient's ED and ES stacks are resampled to `N_POSITIONS` positions from base (0) to apex (1) and joined
   with the slice count into one vector, so neighbouring slices and the two phases stay coupled;
3. the vectors are standardised and modelled as a Gaussian: a per-group mean (shrunk towards the population mean so
   that no small group's mean is one patient) plus the pooled within-group covariance, through its principal
   components;
4. new patients get groups in the training mix (exact counts, shuffled), a vector each from their group's
   Gaussian, and are rasterised slice by slice.
The sampled patients are new draws from the fitted distribution, never a training patient's stack.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cmri_release.core.labels import LV, MYO, RV
from cmri_release.core.splits import largest_remainder
from cmri_release.core.sliceset import SliceSet

N_SECTORS = 24
N_POSITIONS = 9
PHASE_ORDER = ("ED", "ES")
FEATURES_PER_SLICE = 2 + 4 * N_SECTORS  # centre (row, col), endo, epi, rv_in, rv_width
MIN_WALL_PX = 1.5  # thinnest myocardium drawn, so the LV cavity is always enclosed
MIN_SIZE_PX = 0.75  # radii below this draw nothing
GROUP_SHRINK = 2.0  # a group's mean counts the population mean as this many extra patients
VARIANCE_KEPT = 0.95  # share of the within-group variance the principal components keep
MIN_PATIENTS = 3


@dataclass
class SyntheticStack:
    """A sampled patient's label maps: (Z, H, W) per phase, base to apex, both phases with the same Z."""

    group: str
    labels: dict[str, np.ndarray]


def _polar(size: int, centre) -> tuple[np.ndarray, np.ndarray]:
    ii, jj = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    di, dj = ii - centre[0], jj - centre[1]
    return np.hypot(di, dj), np.arctan2(di, dj)


RAYS_PER_SECTOR = 4
RAY_STEP_PX = 0.25


def slice_features(label: np.ndarray, centre) -> np.ndarray:
    """One slice's polar description around `centre` (pixels), in fractions of the image size.

    Along each ray from the centre, the length covered by each structure is integrated over the bilinearly
    interpolated indicator (smooth and sub-pixel, unlike counting pixels); the rays of a sector are averaged.
    For a region that is star-shaped from the centre (the LV cavity, the epicardium) the length is the radius.
    """
    size = label.shape[0]
    n_rays = N_SECTORS * RAYS_PER_SECTOR
    # Sector k spans angles -pi + k*w .. -pi + (k+1)*w; its rays sit evenly inside it.
    theta = -np.pi + (np.arange(n_rays) + 0.5) * (2 * np.pi / n_rays)
    radii = np.arange(0.0, 0.75 * size, RAY_STEP_PX)
    ci = centre[0] + radii[None, :] * np.sin(theta)[:, None]
    cj = centre[1] + radii[None, :] * np.cos(theta)[:, None]
    coords = np.stack([ci.ravel(), cj.ravel()])

    def along(mask):
        values = ndimage.map_coordinates(mask.astype(np.float64), coords, order=1, mode="constant", cval=0.0)
        return values.reshape(n_rays, len(radii))

    lv, heart, rv = along(label == LV), along((label == LV) | (label == MYO)), along(label == RV)
    endo = lv.sum(axis=1) * RAY_STEP_PX
    epi = heart.sum(axis=1) * RAY_STEP_PX
    rv_w = rv.sum(axis=1) * RAY_STEP_PX
    first = np.argmax(rv >= 0.5, axis=1)
    # Where a ray meets no RV: "starts at the epicardium with zero thickness" (neutral for averaging).
    rv_in = np.where((rv >= 0.5).any(axis=1), radii[first], epi)

    def per_sector(v):
        return v.reshape(N_SECTORS, RAYS_PER_SECTOR).mean(axis=1)

    feats = np.concatenate([np.asarray(centre, dtype=np.float64)] + [per_sector(v) for v in (endo, epi, rv_in, rv_w)])
    return feats / size


def _stack_centres(labels: np.ndarray) -> np.ndarray:
    """Per slice, the centroid of LV + MYO; slices without them take the nearest slices' (the heart's axis)."""
    z = len(labels)
    centres = np.full((z, 2), np.nan)
    for k, lab in enumerate(labels):
        heart = (lab == LV) | (lab == MYO)
        if heart.any():
            centres[k] = np.argwhere(heart).mean(axis=0)
    known = np.flatnonzero(~np.isnan(centres[:, 0]))
    if len(known) == 0:  # no LV anywhere (should not happen in a cardiac cohort): use all labels
        for k, lab in enumerate(labels):
            centres[k] = np.argwhere(lab > 0).mean(axis=0) if lab.any() else (np.array(lab.shape) - 1) / 2
        return centres
    for axis in range(2):
        centres[:, axis] = np.interp(np.arange(z), known, centres[known, axis])
    return centres


def stack_features(labels: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(Z, H, W) stack with slice positions in [0, 1] -> (N_POSITIONS, FEATURES_PER_SLICE) at canonical positions."""
    centres = _stack_centres(labels)
    feats = np.stack([slice_features(lab, c) for lab, c in zip(labels, centres)])
    canon = np.linspace(0.0, 1.0, N_POSITIONS)
    if len(feats) == 1:
        return np.repeat(feats, N_POSITIONS, axis=0)
    order = np.argsort(positions, kind="stable")
    pos, feats = np.asarray(positions, dtype=np.float64)[order], feats[order]
    return np.stack([np.interp(canon, pos, feats[:, f]) for f in range(feats.shape[1])], axis=1)


def _periodic(values: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Linear interpolation of per-sector values (at sector centres) at angles `theta`, wrapping around."""
    u = (theta + np.pi) / (2 * np.pi) * N_SECTORS - 0.5
    k0 = np.floor(u).astype(int)
    w = u - k0
    return (1 - w) * values[k0 % N_SECTORS] + w * values[(k0 + 1) % N_SECTORS]


def rasterise(features: np.ndarray, size: int) -> np.ndarray:
    """One slice's features (fractions of the size) -> (size, size) uint8 label map, anatomy enforced:
    the myocardium is at least MIN_WALL_PX thick around the cavity, the RV starts outside the epicardium, and any
    cavity pixel left touching something other than myocardium becomes myocardium (the LV is always enclosed)."""
    f = np.asarray(features, dtype=np.float64) * size
    centre = f[:2]
    endo, epi, rv_in, rv_w = (np.clip(f[2 + k * N_SECTORS: 2 + (k + 1) * N_SECTORS], 0.0, None) for k in range(4))
    endo = np.where(endo < MIN_SIZE_PX, 0.0, endo)
    epi = np.where(endo > 0, np.maximum(epi, endo + MIN_WALL_PX), epi)
    epi = np.where(epi < MIN_SIZE_PX, 0.0, epi)
    # The RV cavity lies against the septum: a gap under a pixel is measurement noise, so close it.
    rv_in = np.where(rv_in < epi + 1.0, epi, rv_in)
    rv_w = np.where(rv_w < MIN_SIZE_PX, 0.0, rv_w)
    r, theta = _polar(size, centre)
    endo_t, epi_t, in_t, w_t = (_periodic(v, theta) for v in (endo, epi, rv_in, rv_w))
    out = np.zeros((size, size), dtype=np.uint8)
    out[(w_t >= MIN_SIZE_PX) & (r >= in_t) & (r < in_t + w_t)] = RV
    out[r < epi_t] = MYO
    lv = r < endo_t
    heart = lv | (out == MYO)
    lv &= ndimage.binary_erosion(heart, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
    out[(r < endo_t) & ~lv] = MYO
    out[lv] = LV
    return out


def patient_vectors(slices: SliceSet) -> tuple[np.ndarray, list[str], list[str]]:
    """Per patient annotated in both phases: its feature vector, its group, its id (the model's training units)."""
    vectors, groups, ids = [], [], []
    lab = slices.labelled()
    for sid in lab.subjects:
        sel = lab.subject_ids == sid
        parts, counts = [], []
        for phase in PHASE_ORDER:
            idx = np.flatnonzero(sel & (lab.phases == phase))
            if len(idx) == 0:
                break
            idx = idx[np.argsort(lab.slice_index[idx], kind="stable")]
            parts.append(stack_features(lab.labels[idx], lab.slice_pos[idx]).ravel())
            counts.append(len(idx))
        if len(parts) != len(PHASE_ORDER):
            continue
        vectors.append(np.concatenate(parts + [[max(counts)]]))
        groups.append(str(lab.subject_meta.get(sid, {}).get("group", "unknown")))
        ids.append(sid)
    return (np.stack(vectors) if vectors else np.zeros((0, 0))), groups, ids


class MaskModel:
    """Statistical shape model of label-map stacks; `fit`, `sample`, and a JSON-safe `to_dict` / `from_dict`."""

    def __init__(self):
        self.size: int | None = None
        self.mean = self.scale = self.components = self.sd = None
        self.groups: list[str] = []
        self.group_weights = self.group_means = None
        self.slice_range: tuple[int, int] = (1, 1)
        self.n_patients = 0

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def fit(self, slices: SliceSet) -> "MaskModel":
        x, groups, _ = patient_vectors(slices)
        if len(x) < MIN_PATIENTS:
            raise ValueError(f"the mask generator needs at least {MIN_PATIENTS} patients annotated at ED and ES, "
                             f"got {len(x)}")
        self.size = slices.size
        self.n_patients = len(x)
        counts = x[:, -1]
        self.slice_range = (int(counts.min()), int(counts.max()))
        self.mean = x.mean(axis=0)
        # Floor the scale so constant features (e.g. a sector no RV ever reaches) do not blow up.
        self.scale = np.maximum(x.std(axis=0), 1e-3)
        z = (x - self.mean) / self.scale
        self.groups = sorted(set(groups))
        g = np.array([self.groups.index(v) for v in groups])
        self.group_weights = np.bincount(g, minlength=len(self.groups)) / len(g)
        self.group_means = np.stack([z[g == k].sum(axis=0) / ((g == k).sum() + GROUP_SHRINK)
                                     for k in range(len(self.groups))])
        resid = z - self.group_means[g]
        dof = max(len(z) - len(self.groups), 1)
        _, s, vt = np.linalg.svd(resid, full_matrices=False)
        var = s ** 2 / dof
        keep = int(np.searchsorted(np.cumsum(var) / max(var.sum(), 1e-12), VARIANCE_KEPT) + 1)
        keep = max(1, min(keep, int((var > 1e-10).sum()) or 1))
        self.components = vt[:keep]
        self.sd = np.sqrt(var[:keep])
        return self

    def _require_fitted(self):
        if not self.fitted:
            raise RuntimeError("the mask model is not fitted")

    def sample_groups(self, n: int, seed: int) -> list[int]:
        """Groups for n patients in the training mix: counts by largest remainder (so even 10 patients get the mix,
        not a lottery), in an order shuffled by the seed."""
        counts = largest_remainder(n, self.group_weights)
        groups = np.repeat(np.arange(len(self.groups)), counts)
        return np.random.default_rng(np.random.SeedSequence([int(seed), 0])).permutation(groups).tolist()

    def sample_vectors(self, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
        """n patient vectors and groups; deterministic for (n, seed)."""
        self._require_fitted()
        vectors, groups = [], []
        for i, g in enumerate(self.sample_groups(n, seed)):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1, i]))
            z = self.group_means[g] + (rng.standard_normal(len(self.sd)) * self.sd) @ self.components
            vectors.append(self.mean + self.scale * z)
            groups.append(self.groups[g])
        return np.stack(vectors) if vectors else np.zeros((0, len(self.mean))), groups

    def sample(self, n: int, seed: int, size: int | None = None) -> list[SyntheticStack]:
        """`n` new patients' ED and ES stacks at `size` pixels (default: the training size)."""
        size = size or self.size
        x, groups = self.sample_vectors(n, seed)
        return [self.render(v, g, size) for v, g in zip(x, groups)]

    def render(self, vector: np.ndarray, group: str, size: int) -> SyntheticStack:
        n_slices = int(np.clip(np.round(vector[-1]), *self.slice_range))
        per_phase = vector[:-1].reshape(len(PHASE_ORDER), N_POSITIONS, FEATURES_PER_SLICE)
        canon = np.linspace(0.0, 1.0, N_POSITIONS)
        positions = np.linspace(0.0, 1.0, n_slices) if n_slices > 1 else np.array([0.5])
        labels = {}
        for p, phase in enumerate(PHASE_ORDER):
            feats = np.stack([np.interp(positions, canon, per_phase[p, :, f]) for f in range(FEATURES_PER_SLICE)],
                             axis=1)
            labels[phase] = np.stack([rasterise(f, size) for f in feats])
        return SyntheticStack(group=group, labels=labels)

    def to_dict(self) -> dict:
        self._require_fitted()

        def arr(a):
            return np.round(np.asarray(a, dtype=np.float64), 7).tolist()

        return {"kind": "polar-shape-gaussian", "n_sectors": N_SECTORS, "n_positions": N_POSITIONS,
                "size": self.size, "n_patients": self.n_patients, "slice_range": list(self.slice_range),
                "mean": arr(self.mean), "scale": arr(self.scale), "components": arr(self.components),
                "sd": arr(self.sd), "groups": self.groups, "group_weights": arr(self.group_weights),
                "group_means": arr(self.group_means)}

    @classmethod
    def from_dict(cls, state: dict) -> "MaskModel":
        """Rebuild from `to_dict`; raises ValueError on anything inconsistent (the caller names the file)."""
        if state.get("kind") != "polar-shape-gaussian" or state.get("n_sectors") != N_SECTORS \
                or state.get("n_positions") != N_POSITIONS:
            raise ValueError("not a polar-shape-gaussian mask model with this version's sectors and positions")
        m = cls()
        dim = len(PHASE_ORDER) * N_POSITIONS * FEATURES_PER_SLICE + 1
        m.size = int(state["size"])
        m.n_patients = int(state["n_patients"])
        m.slice_range = tuple(int(v) for v in state["slice_range"])
        m.mean = np.asarray(state["mean"], dtype=np.float64)
        m.scale = np.asarray(state["scale"], dtype=np.float64)
        m.components = np.asarray(state["components"], dtype=np.float64)
        m.sd = np.asarray(state["sd"], dtype=np.float64)
        m.groups = [str(g) for g in state["groups"]]
        m.group_weights = np.asarray(state["group_weights"], dtype=np.float64)
        m.group_means = np.asarray(state["group_means"], dtype=np.float64)
        k = len(m.sd)
        if (m.mean.shape != (dim,) or m.scale.shape != (dim,) or m.components.shape != (k, dim)
                or m.group_means.shape != (len(m.groups), dim) or m.group_weights.shape != (len(m.groups),)
                or not np.isclose(m.group_weights.sum(), 1.0) or (m.group_weights < 0).any()
                or m.slice_range[0] < 1 or m.slice_range[0] > m.slice_range[1]):
            raise ValueError("mask model arrays have inconsistent shapes or values")
        for a in (m.mean, m.scale, m.components, m.sd, m.group_means):
            if not np.all(np.isfinite(a)):
                raise ValueError("mask model holds NaN or inf")
        m.group_weights = m.group_weights / m.group_weights.sum()  # JSON rounding must not break sampling
        return m
