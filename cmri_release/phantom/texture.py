"""Patient-specific detail: what makes one phantom patient recognisable across slices and frames.

Static tissue (fat, muscle, liver, lungs...) takes its texture from smooth random fields sampled
in the patient frame in 3D, so that neighbouring slices and both phases see the same field. The
heart moves between ED and ES, so its texture (myocardium, blood, trabeculae, papillary muscles)
is attached to material coordinates (angle around the LV axis and depth along it at ED) instead.
Everything here is drawn from the patient's own generator: two patients share nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.ndimage import gaussian_filter

from .anatomy import TWO_PI, Anatomy, Tissue, fourier, random_fourier

# How strongly the static random fields modulate each tissue (relative signal change per unit field).
TEXTURE_AMPLITUDE = np.zeros(len(Tissue))
TEXTURE_AMPLITUDE[[Tissue.LUNG, Tissue.FAT, Tissue.MUSCLE, Tissue.MYOCARDIUM, Tissue.BLOOD, Tissue.VESSEL,
                   Tissue.LIVER, Tissue.STOMACH, Tissue.MARROW, Tissue.CSF, Tissue.BONE, Tissue.MEDIASTINUM]] = [
    0.45, 0.06, 0.1, 0.05, 0.04, 0.06, 0.07, 0.22, 0.12, 0.04, 0.3, 0.15]


def _spline_matrix(grid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(len(points), len(grid)) matrix that cubic-spline-interpolates values on `grid` at `points`."""
    return CubicSpline(grid, np.eye(len(grid)), axis=0)(points)


class SmoothField:
    """A Gaussian random field on a coarse 3D grid (u, v, z), read out on slice planes by splines.

    The read-out is separable (one small matrix per axis), so a stack of 256 x 256 slices costs a
    few matrix products instead of a per-pixel interpolation.
    """

    def __init__(self, rng, u_range, v_range, z_range, step: float, smooth: float = 1.0):
        self.grids = [np.arange(lo - 2 * step, hi + 3 * step, step) for lo, hi in (u_range, v_range, z_range)]
        values = rng.standard_normal(tuple(len(g) for g in self.grids))
        values = gaussian_filter(values, smooth, mode="wrap")
        self.values = (values - values.mean()) / values.std()

    def on_slices(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Field at every pixel of slices at depths z: (len(z), len(u), len(v)), float32."""
        mu, mv, mz = (_spline_matrix(g, p) for g, p in zip(self.grids, (u, v, z)))
        planes = np.tensordot(mz, self.values, axes=([1], [2]))  # (nz, gu, gv)
        return np.einsum("iu,kuv,jv->kij", mu, planes, mv, optimize=True).astype(np.float32)


@dataclass
class Papillary:
    angle: float  # relative to the septal angle
    fraction: float  # of the endocardial radius, from the axis
    radius: float  # mm
    z_span: tuple[float, float]  # fraction of the LV cavity length


@dataclass
class Vessels:
    """Lung vessels as straight tubes through the stack: position at z = 0 and drift per mm of z."""

    start: np.ndarray  # (n, 2) u, v
    drift: np.ndarray  # (n, 2)
    radius: np.ndarray  # (n,)
    z_span: np.ndarray  # (n, 2)

    def at(self, z: float):
        keep = (self.z_span[:, 0] <= z) & (z <= self.z_span[:, 1])
        return self.start[keep] + self.drift[keep] * z, self.radius[keep]


@dataclass
class PatientTexture:
    tissue_gain: np.ndarray  # per-tissue brightness of this patient (relative)
    coarse: SmoothField  # organ-scale inhomogeneity
    fine: SmoothField  # tissue granularity
    myo_texture: np.ndarray  # (2, K, 2) Fourier coefs at base and apex, in material angle
    blood_texture: np.ndarray
    trabeculae_lv: np.ndarray  # (K, 2) high harmonics: where > 0 a trabecula reaches into the cavity
    trabeculae_rv: np.ndarray
    trabecular_depth: tuple[float, float]  # mm, LV and RV
    papillary: list[Papillary]
    pericardial_fat_mm: float
    pericardial_fat_shape: np.ndarray  # Fourier coefs (relative), at base and apex: (2, K, 2)
    vessels: Vessels
    ribs: np.ndarray  # (n, 3): angle at z = 0, angular drift per mm, size mm
    stomach_gas: float  # fraction of the stomach (from the top) that is gas

    def angular(self, coefs_pair, theta, frac):
        """Evaluate a base-to-apex pair of Fourier coefficient sets at relative depth frac in [0, 1]."""
        coefs = (1.0 - frac) * coefs_pair[0] + frac * coefs_pair[1]
        return fourier(theta, coefs)

    def pericardial_fat(self, theta, frac):
        rel = self.angular(self.pericardial_fat_shape, theta, frac)
        # More fat at the base (atrioventricular groove) than at the apex.
        return np.clip(self.pericardial_fat_mm * (1.0 + rel) * (1.3 - 0.6 * frac), 0.0, None)


def sample_texture(rng, anatomy: Anatomy, u_range, v_range, z_range) -> PatientTexture:
    """Draw one patient's detail; the ranges bound the field of view in the patient frame (mm)."""
    body, heart = anatomy.body, anatomy.heart
    gain = np.ones(len(Tissue))
    gain[Tissue.FAT] = rng.normal(1.0, 0.07)
    gain[Tissue.MUSCLE] = rng.normal(1.0, 0.08)
    gain[Tissue.MYOCARDIUM] = rng.normal(1.0, 0.05)
    gain[Tissue.BLOOD] = rng.normal(1.0, 0.04)
    gain[Tissue.VESSEL] = rng.normal(1.0, 0.1)
    gain[Tissue.LIVER] = rng.normal(1.0, 0.12)  # iron, fat infiltration: livers differ a lot
    gain[Tissue.STOMACH] = rng.normal(1.0, 0.2)
    gain[Tissue.MARROW] = rng.normal(1.0, 0.1)
    gain[Tissue.LUNG] = rng.lognormal(0.0, 0.3)
    gain[Tissue.MEDIASTINUM] = rng.normal(1.0, 0.15)

    papillary = []
    for angle in (np.pi - 0.8, -1.35):  # anterolateral and posteromedial, relative to the septum
        papillary.append(Papillary(angle=float(angle + rng.normal(0, 0.15)), fraction=float(rng.uniform(0.66, 0.8)),
                                   radius=float(np.clip(rng.normal(4.2, 0.8), 2.5, 6.5)),
                                   z_span=(float(rng.uniform(0.2, 0.35)), float(rng.uniform(0.7, 0.85)))))

    n_vessels = int(rng.integers(25, 45))
    lo = np.array([u_range[0], v_range[0]])
    hi = np.array([u_range[1], v_range[1]])
    start = lo + rng.random((n_vessels, 2)) * (hi - lo)
    z_lo = rng.uniform(z_range[0] - 40, z_range[1], n_vessels)
    vessels = Vessels(start=start, drift=rng.normal(0, 0.35, (n_vessels, 2)),
                      radius=np.clip(rng.lognormal(np.log(2.2), 0.35, n_vessels), 1.2, 5.0),
                      z_span=np.stack([z_lo, z_lo + rng.uniform(15, 80, n_vessels)], axis=1))

    n_ribs = int(rng.integers(5, 9))
    ribs = np.stack([np.sort(rng.uniform(0, TWO_PI, n_ribs)), rng.normal(0, 0.004, n_ribs),
                     rng.uniform(6, 11, n_ribs)], axis=1)

    def pair(amplitudes):
        return np.stack([random_fourier(rng, amplitudes), random_fourier(rng, amplitudes)])

    trabecular_harmonics = np.r_[np.zeros(6), np.full(18, 0.5)]
    return PatientTexture(
        tissue_gain=gain,
        coarse=SmoothField(rng, u_range, v_range, z_range, step=14.0, smooth=1.0),
        fine=SmoothField(rng, u_range, v_range, z_range, step=4.0, smooth=0.7),
        myo_texture=pair([0.03, 0.03, 0.02, 0.015]),
        blood_texture=pair([0.03, 0.02, 0.015]),
        trabeculae_lv=random_fourier(rng, trabecular_harmonics),
        trabeculae_rv=random_fourier(rng, trabecular_harmonics),
        trabecular_depth=(float(rng.uniform(1.5, 4.0)), float(rng.uniform(2.0, 5.0))),
        papillary=papillary,
        pericardial_fat_mm=float(np.clip(rng.normal(1.5 + 0.2 * body.fat_mm, 1.5), 0.5, 12.0)),
        pericardial_fat_shape=pair([0.35, 0.3, 0.2, 0.15]),
        vessels=vessels,
        ribs=ribs,
        stomach_gas=float(rng.uniform(0.0, 0.5)),
    )
