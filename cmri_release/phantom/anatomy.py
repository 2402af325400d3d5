"""Per-patient anatomy of the phantom, sampled from population distributions.

Everything is in millimetres in a patient frame that the short-axis slices cut: u points to the
image right (the patient's left), v to the image bottom (posterior), z along the heart's long
axis from the mitral valve plane at end-diastole (z = 0) towards the apex. The left ventricle is
described in polar coordinates (r, theta) around its long axis, so that the LV cavity, its wall
and the RV crescent that wraps it are nested by construction; the body around the heart (outline,
subcutaneous fat, chest wall and back muscle, spine, aorta, liver dome) is a set of simple shapes
whose sizes follow the patient's build.

End-systole is derived from end-diastole: the base descends towards a fixed apex (long-axis
shortening), each angle of the endocardium moves inwards by a contraction factor solved so that
the ejection fraction hits the patient's target, and the myocardium keeps its volume (so the wall
thickens). An infarcted segment does not move.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

GROUPS = ("NOR", "DCM", "HCM", "MINF", "ARV")
TWO_PI = 2.0 * np.pi


class Tissue(IntEnum):
    """Tissue classes the renderer paints; each vendor maps them to a bSSFP signal level."""

    AIR = 0
    LUNG = 1
    FAT = 2
    MUSCLE = 3  # skeletal muscle: chest wall, back, diaphragm
    MYOCARDIUM = 4  # LV and RV wall, papillary muscles, trabeculae
    BLOOD = 5  # ventricular and atrial blood pools, outflow tract
    VESSEL = 6  # aorta and lung vessels (flowing blood, a little darker than the ventricles)
    LIVER = 7
    STOMACH = 8
    MARROW = 9  # vertebral body
    CSF = 10
    BONE = 11  # cortical bone: vertebral rim, ribs
    MEDIASTINUM = 12  # fat, lymph nodes and small vessels between the heart and the spine



def wrap(angle):
    """Angle difference wrapped to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % TWO_PI - np.pi


def window(delta, half_width):
    """A raised-cosine bump: 1 at delta = 0, 0 from |delta| >= half_width (delta an angle difference)."""
    x = np.clip(np.abs(wrap(delta)) / half_width, 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * x))


class ArrayMemo:
    """Results of a computation on float arrays, remembered by the arrays' bytes (so a hit is exactly what would be
    computed), returned read-only; emptied when `max_entries` are held."""

    def __init__(self, max_entries: int = 64):
        self.max_entries, self.entries = max_entries, {}

    def get(self, name, arrays, make):
        key = (name,) + tuple((a.shape, a.tobytes()) for a in arrays)
        hit = self.entries.get(key)
        if hit is None:
            hit = make(*arrays)
            for array in (hit if isinstance(hit, tuple) else (hit,)):
                array.setflags(write=False)
            if len(self.entries) >= self.max_entries:
                self.entries.clear()
            self.entries[key] = hit
        return hit


# cos(k theta) and sin(k theta) of recently used angle arrays: the renderer evaluates many profiles on
# the same angle bins (every slice, both phases, every bisection step), and the trigonometry is most
# of the cost.
_BASIS = ArrayMemo()
_BASIS_MAX_ANGLES = 8192


def _cos_sin(theta: np.ndarray, n: int):
    angles = theta[..., None] * np.arange(1, n + 1)
    return np.cos(angles), np.sin(angles)


def _basis(theta: np.ndarray, n: int):
    if theta.size > _BASIS_MAX_ANGLES:
        return _cos_sin(theta, n)
    return _BASIS.get(n, (theta,), lambda t: _cos_sin(t, n))


def fourier(theta, coefs):
    """sum_k a_k cos(k theta) + b_k sin(k theta), k = 1..K, for coefs of shape (K, 2)."""
    theta = np.asarray(theta, dtype=float)
    coefs = np.asarray(coefs, dtype=float)
    cos, sin = _basis(theta, len(coefs))
    return cos @ coefs[:, 0] + sin @ coefs[:, 1]


def random_fourier(rng, amplitudes):
    """Random Fourier coefficients with the given rms amplitude per harmonic."""
    amplitudes = np.asarray(amplitudes, dtype=float)
    return rng.normal(size=(len(amplitudes), 2)) * (amplitudes / np.sqrt(2.0))[:, None]


def _elliptic_profile(z, length):
    """sqrt(1 - (z / length)^2) clipped at 0: the radius profile of a half-ellipsoid from its base."""
    return np.sqrt(np.clip(1.0 - (np.asarray(z, dtype=float) / length) ** 2, 0.0, None))


@dataclass(frozen=True)
class Body:
    """The patient's build and the organs around the heart (patient frame, mm)."""

    height_cm: float
    weight_kg: float
    half_width: float  # body outline semi-axes in the short-axis plane
    half_depth: float
    outline: np.ndarray  # Fourier coefficients of the outline's relative radius
    drift: np.ndarray  # (du/dz, dv/dz): the body section moves as the stack goes to the apex
    fat_mm: float  # mean subcutaneous fat
    fat_shape: np.ndarray  # Fourier coefficients of the fat thickness (relative)
    muscle_mm: float  # chest wall muscle at the front
    muscle_shape: np.ndarray  # Fourier coefficients of the muscle thickness (relative)
    back_muscle_mm: float  # paraspinal muscle at the back
    spine_u: float  # vertebral body centre offset from the body centre, u
    vertebra_radius: float
    canal_radius: float
    aorta_offset: np.ndarray  # descending aorta centre relative to the vertebral body centre
    aorta_radius: float
    liver_top: float  # v of the top of the liver dome at z = 0, relative to the body centre
    liver_rise: float  # how many mm the dome comes up (anteriorly) per mm of z
    liver_curvature: float  # 1/mm: how round the dome is
    liver_u: float  # u of the top of the dome
    stomach_u: float  # liver left of this, stomach right of it
    mediastinum_mm: float  # half-width of the posterior mediastinum between heart and spine

    @property
    def bsa(self) -> float:
        """Body surface area (Mosteller), m^2."""
        return float(np.sqrt(self.height_cm * self.weight_kg / 3600.0))

    def centre(self, z: float) -> np.ndarray:
        return self.drift * z

    def layers(self, theta):
        """Radii (mm) from the body centre of the skin, the inner edge of the subcutaneous fat and the
        inner edge of the muscle (the thorax wall), at angles theta."""
        a, b = self.half_width, self.half_depth
        ellipse = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
        outline = ellipse * (1.0 + fourier(theta, self.outline))
        # Less fat over the spine, more on the flanks and over the chest.
        fat = self.fat_mm * (1.0 + fourier(theta, self.fat_shape)) * (1.0 - 0.5 * window(theta - np.pi / 2, 1.0))
        muscle = self.muscle_mm + (self.back_muscle_mm - self.muscle_mm) * window(theta - np.pi / 2, 1.1)
        # Pectoral muscles in front, paraspinal behind, thin intercostal muscle at the flanks.
        muscle = muscle * (1.0 - 0.5 * window(theta, 0.9) - 0.5 * window(theta - np.pi, 0.9))
        muscle = muscle * (1.0 + fourier(theta, self.muscle_shape))
        fat_inner = outline - np.clip(fat, 2.0, None)
        return outline, fat_inner, fat_inner - np.clip(muscle, 4.0, None)


@dataclass(frozen=True)
class Heart:
    """Both ventricles at ED and the way they contract to ES (patient frame, mm)."""

    group: str
    centre: np.ndarray  # LV long axis at z = 0, (u, v) in the patient frame
    tilt: np.ndarray  # (du/dz, dv/dz) of the long axis
    septal_angle: float  # direction from the LV axis to the RV, radians
    cavity_length: float  # LV cavity, valve plane to apex (ED)
    apex_cap: float  # myocardium beyond the cavity at the apex
    cavity_radius: float  # mean LV cavity radius at the base (ED)
    cavity_shape: np.ndarray  # Fourier coefficients (relative to the septal angle)
    septal_flattening: float  # ARV: the septum pushed into the LV (D-shaped LV)
    wall_mm: float
    wall_shape: np.ndarray  # Fourier coefficients (relative)
    septal_hypertrophy: float  # HCM: extra relative thickness at the septum
    infarct_angle: float  # MINF: centre of the infarcted territory (absolute angle)
    infarct_half_width: float  # radians; 0 when there is no infarct
    infarct_z: tuple[float, float]  # fraction of the cavity length the infarct spans
    infarct_thinning: float
    apical_squeeze: float  # extra contraction towards the apex (HCM cavity obliteration)
    shortening: float  # long-axis shortening fraction ED -> ES
    lv_contraction: float  # radial ES/ED endocardial factor, solved from the target EF
    rv_angle: float  # centre of the RV crescent (absolute angle)
    rv_half_width: tuple[float, float]  # radians towards anterior (+) and inferior (-)
    rv_depth: float  # crescent depth at its centre, base, ED
    rv_length: float  # the RV ends before the LV apex
    rv_wall_mm: float
    rv_contraction: float  # ES/ED crescent-depth factor, solved from the target RV EF
    outflow_angle: float  # LV outflow tract: the basal ring opens here
    outflow_half_width: float
    outflow_depth: float  # how far below the valve plane the ring stays open (0: closed)
    target_ef: float
    target_rv_ef: float
    atrium_radius: float = 20.0  # left atrium, seen behind the LV in the basal slices
    atrium_angle: float = np.pi / 2  # direction from the LV axis (absolute)
    atrium_depth: float = 0.0  # how far below the valve plane the atrium still shows at ED

    def atrium_reach(self, phase: str) -> float:
        """Slices shallower than this (scanner z, mm) show the atrium; at ES the valve plane has descended."""
        return self.atrium_depth + (self.shortening * self.length if phase == "ES" else 0.0)

    @property
    def length(self) -> float:
        """Valve plane to epicardial apex at ED."""
        return self.cavity_length + self.apex_cap

    # --- geometry ---------------------------------------------------------------------------
    def axis(self, z: float) -> np.ndarray:
        """(u, v) of the LV long axis at scanner depth z (mm)."""
        return self.centre + self.tilt * z

    def material_z(self, z, phase: str):
        """The ED depth of the tissue that slice depth z cuts in this phase (apex fixed, base descends).

        Above the descended valve plane the basal geometry is kept (an open ring, as ES base slices show).
        """
        if phase == "ED":
            return z
        s = self.shortening
        return np.maximum((np.asarray(z, dtype=float) - s * self.length) / (1.0 - s), 0.0)

    def _memo(self, name, arrays, make):
        """make(*arrays), remembered for this (immutable) heart: the renderer and the volume solvers ask
        for the same angles again and again (every slice, every bisection step). Read-only arrays out."""
        if np.size(arrays[0]) < 16:
            return make(*arrays)
        memo = self.__dict__.setdefault("_memo_cache", ArrayMemo())
        return memo.get(name, [np.asarray(a, dtype=float) for a in arrays], make)

    def _base_cavity_radius(self, theta):
        return self._memo("base_cavity_radius", (theta,), self._make_base_cavity_radius)

    def _make_base_cavity_radius(self, theta):
        rel = theta - self.septal_angle
        shape = 1.0 + fourier(rel, self.cavity_shape)
        return self.cavity_radius * shape * (1.0 - self.septal_flattening * window(rel, np.radians(55)))

    def _infarct(self, theta, zm):
        if self.infarct_half_width <= 0:
            return np.zeros_like(np.asarray(theta, dtype=float))
        z0, z1 = self.infarct_z
        frac = zm / self.cavity_length
        along = np.clip(np.minimum(frac - z0, z1 - frac) / 0.1 + 0.5, 0.0, 1.0)  # soft ends along the axis
        return window(theta - self.infarct_angle, self.infarct_half_width) * along

    def _wall_shape(self, theta):
        rel = theta - self.septal_angle
        t = self.wall_mm * (1.0 + fourier(rel, self.wall_shape))
        return t * (1.0 + self.septal_hypertrophy * window(rel, np.radians(70)))

    def _wall(self, theta, zm):
        t = self._memo("wall_shape", (theta,), self._wall_shape)
        t = t * (1.0 - self.infarct_thinning * self._infarct(theta, zm))
        return np.maximum(t, 2.5)

    def _lv_ed(self, theta, zm):
        return self._memo("lv_ed", (theta, zm), self._make_lv_ed)

    def _make_lv_ed(self, theta, zm):
        base = self._base_cavity_radius(theta)
        endo = base * _elliptic_profile(zm, self.cavity_length)
        epi = (base + self._wall(theta, zm)) * _elliptic_profile(zm, self.length)
        return endo, np.maximum(epi, endo + 2.0 * (endo > 0))

    def _contraction(self, theta, zm, k):
        """ES/ED endocardial radius factor per angle: k in healthy muscle, 1 where infarcted."""
        frac = np.clip(zm / self.cavity_length, 0.0, 1.0)
        healthy = k * (1.0 - self.apical_squeeze * frac**2)
        return np.clip(healthy + (1.0 - healthy) * self._infarct(theta, zm), 0.02, 1.0)

    def lv_radii(self, theta, z, phase, *, k=None):
        """LV endocardial and epicardial radius (mm) at angles theta for slice depth z."""
        zm = self.material_z(z, phase)
        endo, epi = self._lv_ed(theta, zm)
        if phase == "ED":
            return endo, epi
        if k is None:  # the heart's own contraction: the same answer every time it is asked
            return self._memo("lv_radii_es", (theta, z), lambda theta, z: self._lv_es(theta, z, zm, endo, epi,
                                                                                   self.lv_contraction))
        return self._lv_es(theta, z, zm, endo, epi, k)

    def _lv_es(self, theta, z, zm, endo, epi, k):
        endo_es = endo * self._contraction(theta, zm, k)
        # The myocardium keeps its volume: the same wall area per slice, compressed along the axis.
        epi_es = np.sqrt(endo_es**2 + (epi**2 - endo**2) / (1.0 - self.shortening))
        return endo_es, epi_es

    def rv_depth_at(self, theta, z, phase, *, depth=None, k=None):
        """Radial depth (mm) of the RV cavity beyond the LV epicardium; 0 outside the crescent."""
        zm = self.material_z(z, phase)
        across = self._memo("rv_across", (theta,), self._rv_across)
        depth = self.rv_depth if depth is None else depth
        d = depth * across * _elliptic_profile(zm, self.rv_length)
        if phase == "ES":
            d = d * (self.rv_contraction if k is None else k) * (1.0 - self.valve_gap(z, phase))
        return d

    def _rv_across(self, theta):
        rel = wrap(theta - self.rv_angle)
        half = np.where(rel >= 0, self.rv_half_width[0], self.rv_half_width[1])
        return np.clip(1.0 - (rel / half) ** 2, 0.0, None) ** 0.8

    def valve_gap(self, z, phase):
        """Fraction (0-1) of the basal ring missing because the slice lies above the valve plane.

        At ES the base has descended: a slice above the new valve plane cuts the atrium through the
        open mitral ring, so only an arc of the ventricle is left; 12 mm above it nothing is.
        """
        if phase == "ED":
            return np.zeros(np.shape(z))
        s = self.shortening
        above = (s * self.length - np.asarray(z, dtype=float)) / (1.0 - s)
        return np.clip(above / 12.0, 0.0, 1.0)

    def mitral_angle(self) -> float:
        """Where the basal ring opens to the atrium: lateral of the atrium, away from the septum."""
        return self.atrium_angle - 0.4

    def lv_labelled(self, z, phase):
        """Annotators label the LV (cavity and wall) in a basal slice only while most of its ring is there."""
        return self.valve_gap(z, phase) < 0.4

    def outflow_open(self, theta, z, phase):
        """True where the basal myocardial ring is open towards the outflow tract."""
        zm = self.material_z(z, phase)
        return (zm < self.outflow_depth) & (np.abs(wrap(theta - self.outflow_angle)) < self.outflow_half_width)

    # --- volumes by numerical integration (used to solve sizes and contractions) ---------------
    def _grid(self):
        """Angles (1, n) and depths (m, 1) covering the whole ventricle, and the depth step."""
        zs = np.linspace(0.0, self.length, 97)[:, None]
        return _THETA_GRID[None, :], zs, float(zs[1, 0] - zs[0, 0])

    def lv_cavity_volume(self, phase, *, k=None) -> float:
        """LV cavity volume (ml) over the whole ventricle, by integration in polar coordinates."""
        th, zs, dz = self._grid()
        endo, _ = self.lv_radii(th, zs, phase, k=k)
        visible = (1.0 - self.valve_gap(zs[:, 0], phase)) * self.lv_labelled(zs[:, 0], phase)
        return float((np.mean(endo**2, axis=1) * visible).sum() * np.pi * dz / 1000.0)

    def rv_cavity_volume(self, phase, *, depth=None, k=None) -> float:
        th, zs, dz = self._grid()
        _, epi = self.lv_radii(th, zs, phase)
        d = self.rv_depth_at(th, zs, phase, depth=depth, k=k)
        return float(np.mean((epi + d) ** 2 - epi**2, axis=1).sum() * np.pi * dz / 1000.0)


_THETA_GRID = (np.arange(180) + 0.5) * TWO_PI / 180


@dataclass(frozen=True)
class Anatomy:
    group: str
    sex: str
    body: Body
    heart: Heart


# Population distributions per group (ED): LV volume index ml/m^2, cavity length/radius ratio,
# wall thickness mm, LV EF, RV volume index ml/m^2, RV EF, long-axis shortening.
_GROUP_PARAMS = {
    "NOR": dict(lvedvi=(78, 10), aspect=(3.1, 0.2), wall=(8.5, 0.8), ef=(0.63, 0.04), rvedvi=(80, 10),
                rvef=(0.56, 0.05), shortening=(0.14, 0.02)),
    "DCM": dict(lvedvi=(155, 22), aspect=(2.2, 0.15), wall=(6.5, 0.6), ef=(0.24, 0.06), rvedvi=(95, 18),
                rvef=(0.40, 0.08), shortening=(0.06, 0.015)),
    "HCM": dict(lvedvi=(68, 9), aspect=(3.2, 0.2), wall=(14.5, 1.5), ef=(0.73, 0.04), rvedvi=(72, 10),
                rvef=(0.60, 0.05), shortening=(0.11, 0.02)),
    "MINF": dict(lvedvi=(112, 15), aspect=(2.7, 0.2), wall=(8.0, 0.8), ef=(0.33, 0.05), rvedvi=(85, 12),
                 rvef=(0.50, 0.06), shortening=(0.08, 0.02)),
    "ARV": dict(lvedvi=(72, 9), aspect=(3.0, 0.2), wall=(8.0, 0.8), ef=(0.58, 0.05), rvedvi=(140, 20),
                rvef=(0.30, 0.06), shortening=(0.12, 0.02)),
}


def _normal(rng, mean_sd, lo=None, hi=None):
    value = rng.normal(*mean_sd)
    return float(np.clip(value, lo if lo is not None else -np.inf, hi if hi is not None else np.inf))


def _bisect(f, target, lo, hi, iters=32):
    """Solve f(x) = target for f increasing on [lo, hi]."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def sample_body(rng) -> tuple[str, Body]:
    sex = "F" if rng.random() < 0.4 else "M"
    height = _normal(rng, (163, 7) if sex == "F" else (176, 7), 145, 200)
    bmi = float(np.exp(rng.normal(np.log(26.0), 0.15)))
    weight = float(np.clip(bmi * (height / 100) ** 2, 40, 150))
    build = np.sqrt(bmi / 26.0) * height / 172.0  # girth grows with BMI, all sizes with height
    fat = float(np.clip(rng.normal(14.0 * (bmi / 26.0) ** 2.2, 3.0), 3.0, 60.0))
    half_width = float(rng.normal(172, 10) * build) + 0.4 * fat
    half_depth = float(rng.normal(138, 9) * build) + 0.6 * fat
    vertebra = float(rng.normal(17, 1.5))
    body = Body(
        height_cm=round(height, 1), weight_kg=round(weight, 1),
        half_width=half_width, half_depth=half_depth,
        outline=random_fourier(rng, [0.02, 0.04, 0.02, 0.015, 0.008, 0.005]),
        drift=rng.normal(0.0, 0.06, size=2),
        fat_mm=fat, fat_shape=random_fourier(rng, [0.15, 0.25, 0.12, 0.08]),
        muscle_mm=float(rng.normal(16, 3) * (1.15 if sex == "M" else 0.9)),
        muscle_shape=random_fourier(rng, [0.1, 0.2, 0.2, 0.15, 0.1, 0.08]),
        back_muscle_mm=float(rng.normal(48, 6)),
        spine_u=float(rng.normal(-5, 8)),
        vertebra_radius=vertebra, canal_radius=float(rng.normal(7, 0.8)),
        aorta_offset=np.array([rng.normal(26, 4), rng.normal(-vertebra - 4, 4)]),
        aorta_radius=float(np.clip(rng.normal(12, 1.5), 8, 17)),
        liver_top=float(rng.normal(0.15, 0.08) * half_depth),
        liver_rise=float(rng.normal(0.6, 0.12)),
        liver_curvature=float(rng.normal(0.006, 0.0015)),
        liver_u=float(rng.normal(-60, 20)),
        stomach_u=float(rng.normal(60, 15)),
        mediastinum_mm=float(rng.normal(19, 4)),
    )
    return sex, body


def sample_heart(rng, group: str, body: Body) -> Heart:
    if group not in _GROUP_PARAMS:
        raise ValueError(f"unknown group {group!r}; expected one of {GROUPS}")
    p = _GROUP_PARAMS[group]
    bsa = body.bsa
    lvedv = _normal(rng, p["lvedvi"], 40) * bsa * 1000.0  # mm^3
    aspect = _normal(rng, p["aspect"], 1.8)
    # Half-ellipsoid cavity: V = 2/3 pi R^2 L with L = aspect R.
    radius = (3.0 * lvedv / (2.0 * np.pi * aspect)) ** (1.0 / 3.0)
    septal = np.pi + np.radians(rng.normal(12, 10))  # the RV lies to the image left and a little anterior
    wall = _normal(rng, p["wall"], 4.5) * (bsa / 1.9) ** 0.25
    # Anterior is -v, i.e. angles increasing from the septal angle towards 3 pi / 2.
    ecc = abs(rng.normal(0.07, 0.03)) * (0.4 if group == "DCM" else 1.0)
    cavity_shape = random_fourier(rng, [0.0, 0.0, 0.025, 0.015]) * (0.5 if group == "DCM" else 1.0)
    cavity_shape[1] = ecc * np.array([np.cos(2 * rng.uniform(0, np.pi)), np.sin(2 * rng.uniform(0, np.pi))])
    infarct = dict(infarct_angle=0.0, infarct_half_width=0.0, infarct_z=(0.0, 0.0), infarct_thinning=0.0)
    if group == "MINF":
        territory = rng.choice(["LAD", "RCA", "LCX"], p=[0.5, 0.3, 0.2])
        centre, zspan = {"LAD": (0.7, (0.35, 1.05)), "RCA": (-1.3, (-0.05, 0.7)), "LCX": (np.pi - 0.5, (-0.05, 0.75))}[
            territory]
        infarct = dict(infarct_angle=float(septal + centre + rng.normal(0, 0.2)),
                       infarct_half_width=float(rng.uniform(0.9, 1.4)), infarct_z=zspan,
                       infarct_thinning=float(rng.uniform(0.4, 0.6)))
    rv_scale = 1.35 if group == "ARV" else 1.0
    heart = Heart(
        group=group,
        centre=np.array([rng.normal(32, 12), 0.0]),  # v: placed against the chest wall below
        tilt=np.array([rng.normal(0.12, 0.08), rng.normal(0.05, 0.08)]),
        septal_angle=float(septal),
        cavity_length=float(aspect * radius), apex_cap=float(rng.normal(7, 1.2) * (1.6 if group == "HCM" else 1.0)),
        cavity_radius=float(radius), cavity_shape=cavity_shape,
        septal_flattening=float(rng.uniform(0.18, 0.3)) if group == "ARV" else 0.0,
        wall_mm=float(wall), wall_shape=random_fourier(rng, [0.05, 0.06, 0.03]),
        septal_hypertrophy=float(rng.uniform(0.3, 0.8)) if group == "HCM" else 0.0,
        apical_squeeze=float(rng.uniform(0.3, 0.5)) if group == "HCM" else 0.0,
        shortening=_normal(rng, p["shortening"], 0.02, 0.2),
        lv_contraction=1.0,
        rv_angle=float(septal + rng.normal(0.15, 0.1)),
        rv_half_width=(float(rng.normal(1.5, 0.15) * rv_scale ** 0.3), float(rng.normal(1.15, 0.12) * rv_scale ** 0.3)),
        rv_depth=1.0,
        rv_length=float(rng.uniform(0.72, 0.85) * aspect * radius),
        rv_wall_mm=float(rng.normal(3.5, 0.4) * (0.75 if group == "ARV" else 1.0)),
        rv_contraction=1.0,
        outflow_angle=float(septal + rng.uniform(0.35, 0.8)),
        outflow_half_width=float(rng.uniform(0.35, 0.6)),
        outflow_depth=float(rng.uniform(4, 12)) if rng.random() < 0.65 else 0.0,
        target_ef=_normal(rng, p["ef"], 0.08, 0.85),
        target_rv_ef=_normal(rng, p["rvef"], 0.1, 0.75),
        atrium_radius=float(rng.normal(20, 3)), atrium_angle=float(np.pi / 2 + rng.normal(-0.1, 0.2)),
        atrium_depth=float(rng.uniform(-4.0, 9.0)),
        **infarct,
    )
    heart = _solve_heart(heart, lvedv / 1000.0, _normal(rng, p["rvedvi"], 40) * bsa)
    return _place_heart(heart, body, gap=float(rng.uniform(1.0, 6.0)))


def _place_heart(heart: Heart, body: Body, gap: float) -> Heart:
    """Put the heart behind the anterior chest wall, `gap` mm of fat between the wall and the RV."""
    from dataclasses import replace

    th = _THETA_GRID
    _, epi = heart.lv_radii(th, 5.0, "ED")
    depth = heart.rv_depth_at(th, 5.0, "ED")
    outer = epi + np.where(depth > 0.4, depth + heart.rv_wall_mm, 0.0)
    reach = float(np.max(-np.sin(th) * outer))  # how far the heart extends anteriorly from its axis
    # The thorax wall's v at the heart's u, on the anterior side.
    fine = np.linspace(np.pi, TWO_PI, 721)
    _, _, inner = body.layers(fine)
    wall_v = float(np.interp(heart.centre[0], inner * np.cos(fine), inner * np.sin(fine)))
    return replace(heart, centre=np.array([heart.centre[0], wall_v + reach + gap]))


def _solve_heart(heart: Heart, lvedv_ml: float, rvedv_ml: float) -> Heart:
    """Scale the cavity to the target EDV, then solve the RV depth and both contraction factors."""
    from dataclasses import replace

    scale = np.sqrt(lvedv_ml / heart.lv_cavity_volume("ED"))
    heart = replace(heart, cavity_radius=heart.cavity_radius * scale)
    rv_depth = _bisect(lambda d: heart.rv_cavity_volume("ED", depth=d), rvedv_ml, 1.0, 120.0)
    heart = replace(heart, rv_depth=rv_depth)
    lv_es = (1.0 - heart.target_ef) * heart.lv_cavity_volume("ED")
    k_lv = _bisect(lambda k: heart.lv_cavity_volume("ES", k=k), lv_es, 0.02, 1.0)
    heart = replace(heart, lv_contraction=k_lv)  # the RV at ES wraps the contracted LV
    rv_es = (1.0 - heart.target_rv_ef) * heart.rv_cavity_volume("ED")
    k_rv = _bisect(lambda k: heart.rv_cavity_volume("ES", k=k), rv_es, 0.02, 1.5)
    return replace(heart, rv_contraction=k_rv)


def sample_anatomy(rng, group: str) -> Anatomy:
    """One patient: build, organs and a heart of the given ACDC group."""
    sex, body = sample_body(rng)
    heart = sample_heart(rng, group, body)
    return Anatomy(group=group, sex=sex, body=body, heart=heart)
