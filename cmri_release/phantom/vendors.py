"""Scanner styles: how a vendor's bSSFP cine turns the same anatomy into different numbers.

Vendors differ the way M&Ms shows they do: arbitrary intensity units, blood/myocardium and fat
contrast, noise (Rician: complex Gaussian noise, then the magnitude), the receive coils' bias
field (brighter near the chest wall), resolution (how much of k-space is acquired and how it is
filtered: blur and ringing), pixel spacing, matrix, slice thickness and gap, and at 3 T the dark
off-resonance bands of bSSFP. Each vendor has centres (with a field strength) as M&Ms has.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft

from .anatomy import Heart, Tissue

# M&Ms codes its vendors by letter (A Siemens, B Philips, C GE, D Canon).
VENDOR_LETTERS = {"A": "Siemens", "B": "Philips", "C": "GE", "D": "Canon"}
DEFAULT_VENDORS = ("Siemens", "Philips", "GE")
SLICE_COUNT = (8, 12)
SLICE_SPACING_MM = (6.0, 10.0)


def _levels(**kw) -> np.ndarray:
    """Relative bSSFP signal per tissue (ventricular blood = 1)."""
    out = np.zeros(len(Tissue))
    for name, value in kw.items():
        out[Tissue[name.upper()]] = value
    return out


@dataclass(frozen=True)
class VendorStyle:
    name: str
    letter: str
    centres: tuple[tuple[str, float], ...]  # (centre name, field strength in T)
    levels: np.ndarray  # relative signal per Tissue
    blood_units: tuple[float, float]  # range of the blood signal in this vendor's arbitrary units
    noise: float  # noise sigma relative to blood at 1.5 T
    bias: float  # strength of the receive-coil bias (log-scale change across the body)
    bias_posterior: float  # share of the signal gain from a posterior (spine) coil
    kspace_fraction: tuple[float, float]  # acquired fraction of k-space, read and phase direction
    kspace_filter: str  # "box" (sharp, rings), "tukey", "fermi"
    pixel_mm: tuple[float, float]
    matrix: tuple[int, ...]  # columns (x); rows follow matrix_aspect
    matrix_aspect: tuple[float, float]  # rows / columns
    thickness_mm: tuple[float, ...]
    gap_mm: tuple[float, ...]
    n_frames: tuple[int, int]
    banding_3t: float  # chance of visible off-resonance bands at 3 T


VENDOR_STYLES = {
    style.name: style for style in (
        VendorStyle(
            name="Siemens", letter="A", centres=(("Centre A1", 1.5), ("Centre A2", 3.0)),
            levels=_levels(lung=0.035, fat=0.92, muscle=0.21, myocardium=0.24, blood=1.0, vessel=0.85,
                           liver=0.3, stomach=0.7, marrow=0.55, csf=1.05, bone=0.06, mediastinum=0.36),
            blood_units=(450.0, 900.0), noise=0.022, bias=0.55, bias_posterior=0.1,
            kspace_fraction=(0.85, 0.68), kspace_filter="tukey",
            pixel_mm=(1.3, 1.7), matrix=(208, 224, 256), matrix_aspect=(0.78, 0.9),
            thickness_mm=(6.0, 8.0), gap_mm=(2.0,), n_frames=(25, 30), banding_3t=0.6,
        ),
        VendorStyle(
            name="Philips", letter="B", centres=(("Centre B1", 1.5), ("Centre B2", 3.0)),
            levels=_levels(lung=0.06, fat=0.7, muscle=0.31, myocardium=0.36, blood=1.0, vessel=0.8,
                           liver=0.4, stomach=0.65, marrow=0.5, csf=0.95, bone=0.08, mediastinum=0.38),
            blood_units=(2000.0, 3600.0), noise=0.035, bias=0.3, bias_posterior=0.45,
            kspace_fraction=(0.6, 0.55), kspace_filter="box",
            pixel_mm=(1.2, 1.45), matrix=(240, 256), matrix_aspect=(1.0, 1.0),
            thickness_mm=(8.0,), gap_mm=(0.0, 2.0), n_frames=(30, 30), banding_3t=0.35,
        ),
        VendorStyle(
            name="GE", letter="C", centres=(("Centre C1", 1.5),),
            levels=_levels(lung=0.045, fat=1.08, muscle=0.16, myocardium=0.175, blood=1.0, vessel=0.9,
                           liver=0.26, stomach=0.75, marrow=0.6, csf=1.1, bone=0.05, mediastinum=0.32),
            blood_units=(150.0, 260.0), noise=0.06, bias=0.6, bias_posterior=0.0,
            kspace_fraction=(0.92, 0.8), kspace_filter="fermi",
            pixel_mm=(1.45, 1.8), matrix=(192, 208, 224), matrix_aspect=(1.0, 1.0),
            thickness_mm=(8.0,), gap_mm=(1.0, 2.0), n_frames=(25, 28), banding_3t=0.0,
        ),
        VendorStyle(
            name="Canon", letter="D", centres=(("Centre D1", 1.5),),
            levels=_levels(lung=0.05, fat=0.85, muscle=0.26, myocardium=0.29, blood=1.0, vessel=0.85,
                           liver=0.34, stomach=0.7, marrow=0.52, csf=1.0, bone=0.07, mediastinum=0.36),
            blood_units=(1000.0, 1500.0), noise=0.04, bias=0.45, bias_posterior=0.25,
            kspace_fraction=(0.75, 0.62), kspace_filter="tukey",
            pixel_mm=(1.25, 1.55), matrix=(224, 256), matrix_aspect=(0.85, 1.0),
            thickness_mm=(7.0, 8.0), gap_mm=(1.0, 3.0), n_frames=(25, 30), banding_3t=0.0,
        ),
    )
}


def resolve_vendor(name: str) -> VendorStyle:
    """A vendor style by name (case-insensitive) or by M&Ms letter; ValueError naming the choices."""
    text = str(name).strip()
    key = VENDOR_LETTERS.get(text.upper(), text)
    for style in VENDOR_STYLES.values():
        if style.name.lower() == key.lower():
            return style
    choices = ", ".join(f"{s.name} ({s.letter})" for s in VENDOR_STYLES.values())
    raise ValueError(f"unknown vendor {name!r}; choose from {choices}")


@dataclass(frozen=True)
class Protocol:
    """One subject's acquisition: geometry of the stack, scanner settings, intensity units."""

    vendor: str
    centre: str
    field_t: float
    shape: tuple[int, int]  # (x, y) pixels
    pixel_mm: tuple[float, float]
    slice_positions: np.ndarray  # z of each slice in the patient frame, base to apex (mm)
    slice_thickness: float
    fov_centre: np.ndarray  # (u, v) of the image centre in the patient frame
    rotation: np.ndarray  # 3x3: patient frame (u, v, z) -> world (mm), columns unit vectors
    origin: np.ndarray  # world position of the patient frame's origin
    n_frames: int
    es_frame: int
    blood_units: float
    noise: float  # sigma relative to blood
    bias: float
    bias_posterior: float
    bias_tilt: np.ndarray  # patient-specific low-order coil sensitivity
    banding: tuple[float, float] | None  # (radius mm at which the first band sits, band width) or None

    @property
    def slice_spacing(self) -> float:
        return float(self.slice_positions[1] - self.slice_positions[0])

    def pixel_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """u of each column and v of each row, in the patient frame (mm)."""
        (nx, ny), (dx, dy) = self.shape, self.pixel_mm
        u = self.fov_centre[0] + (np.arange(nx) - (nx - 1) / 2.0) * dx
        v = self.fov_centre[1] + (np.arange(ny) - (ny - 1) / 2.0) * dy
        return u, v

    def affine(self) -> np.ndarray:
        """Voxel (i, j, k) -> world mm: the patient frame rotated into the scanner, scaled by spacing."""
        u, v = self.pixel_coordinates()
        spacing = np.array([self.pixel_mm[0], self.pixel_mm[1], self.slice_spacing])
        out = np.eye(4)
        out[:3, :3] = self.rotation * spacing[None, :]
        out[:3, 3] = self.origin + self.rotation @ np.array([u[0], v[0], self.slice_positions[0]])
        return out


def _rotation(rng) -> np.ndarray:
    """A short-axis orientation: the long axis points to the patient's left, anterior and inferior."""
    # World axes are RAS (+x right, +y anterior, +z superior); jitter around a typical double oblique.
    long_axis = np.array([-0.6, 0.45, -0.65]) + rng.normal(0, 0.12, 3)
    long_axis /= np.linalg.norm(long_axis)
    posterior = np.array([0.0, -1.0, 0.0])
    v_axis = posterior - long_axis * (posterior @ long_axis)
    v_axis /= np.linalg.norm(v_axis)
    u_axis = np.cross(long_axis, v_axis)  # towards the patient's left: u, v, z is a left-handed frame
    angle = rng.normal(0, 0.15)  # in-plane rotation the planner left
    c, s = np.cos(angle), np.sin(angle)
    u_axis, v_axis = c * u_axis + s * v_axis, -s * u_axis + c * v_axis
    return np.stack([u_axis, v_axis, long_axis], axis=1)


def sample_protocol(rng, style: VendorStyle, heart: Heart, centre_index: int | None = None) -> Protocol:
    """Plan a short-axis stack for this heart with this vendor's settings (8-12 slices base to apex)."""
    centre, field_t = style.centres[int(rng.integers(len(style.centres))) if centre_index is None else centre_index]
    dx = float(rng.uniform(*style.pixel_mm))
    dy = dx  # square pixels, as cine protocols reconstruct
    nx = int(rng.choice(style.matrix))
    ny = int(round(nx * rng.uniform(*style.matrix_aspect) / 8.0) * 8)

    first = float(rng.uniform(3.0, 10.0))  # the planner puts the first slice just below the valve plane
    last = heart.length - float(rng.uniform(1.0, 5.0))
    nominal = float(rng.choice(style.thickness_mm) + rng.choice(style.gap_mm))
    span = last - first
    # The protocol's spacing decides the count; the count must stay 8-12 and the spacing 6-10 mm.
    n = round(span / nominal) + 1
    n = min(max(n, int(np.ceil(span / SLICE_SPACING_MM[1])) + 1), int(np.floor(span / SLICE_SPACING_MM[0])) + 1)
    n = int(np.clip(n, *SLICE_COUNT))
    spacing = float(np.clip(span / (n - 1), *SLICE_SPACING_MM))
    positions = first + spacing * np.arange(n)
    thickness = float(min(max(style.thickness_mm), spacing))

    # The heart is not centred: the planner centres the field of view only roughly on it.
    mid = heart.axis(float(positions.mean()))
    room = np.array([nx * dx, ny * dy]) / 2.0 - 85.0  # keep the whole heart inside the field of view
    offset = np.clip(rng.normal([-12.0, 22.0], [25.0, 18.0]), -np.maximum(room, 0), np.maximum(room, 0))

    n_frames = int(rng.integers(style.n_frames[0], style.n_frames[1] + 1))
    es_frame = int(np.clip(round(n_frames * rng.uniform(0.34, 0.4)) + 1, 2, n_frames))
    banding = None
    if field_t >= 3.0 and rng.random() < style.banding_3t:
        banding = (float(rng.uniform(90, 160)), float(rng.uniform(0.12, 0.25)))
    return Protocol(
        vendor=style.name, centre=centre, field_t=field_t, shape=(nx, ny), pixel_mm=(dx, dy),
        slice_positions=positions, slice_thickness=thickness, fov_centre=mid + offset,
        rotation=_rotation(rng), origin=rng.normal(0.0, 25.0, 3),
        n_frames=n_frames, es_frame=es_frame,
        blood_units=float(rng.uniform(*style.blood_units)),
        noise=style.noise * (0.7 if field_t >= 3.0 else 1.0) * float(rng.uniform(0.85, 1.2)),
        bias=style.bias * float(rng.uniform(0.8, 1.2)), bias_posterior=style.bias_posterior,
        bias_tilt=rng.normal(0.0, 0.12, 3), banding=banding,
    )


def bias_field(protocol: Protocol, u: np.ndarray, v: np.ndarray, body_centre, body_depth: float,
               heart) -> np.ndarray:
    """Receive-coil sensitivity (x, y): brightest at the anterior chest wall (and at the back with a
    spine coil), 1 at the heart, where the scanner's prescan sets the receiver gain."""

    def log_gain(uu, vv):
        du = (uu - body_centre[0]) / body_depth
        dv = (vv - body_centre[1]) / body_depth
        anterior = np.exp(-1.2 * (dv + 1.0))  # decays with depth from the anterior surface (dv = -1)
        posterior = np.exp(-1.2 * (1.0 - dv))
        gain = (1.0 - protocol.bias_posterior) * anterior + protocol.bias_posterior * posterior
        t = protocol.bias_tilt
        return protocol.bias * np.log(gain) + t[0] * du + t[1] * dv + t[2] * du * dv

    field = np.exp(log_gain(u[:, None], v[None, :]) - log_gain(heart[0], heart[1]))
    return field.astype(np.float32)


def banding_factor(protocol: Protocol, u: np.ndarray, v: np.ndarray, centre) -> np.ndarray | None:
    """bSSFP off-resonance bands: a dark ring where the field offset (growing away from the shim centre) is pi."""
    if protocol.banding is None:
        return None
    radius, width = protocol.banding
    r2 = ((u[:, None] - centre[0]) ** 2 + (v[None, :] - centre[1]) ** 2) / radius**2
    phase = np.pi * r2  # 0 at the shimmed heart, pi at `radius`, 3 pi further out
    distance = np.abs((phase % (2 * np.pi)) - np.pi) / np.pi  # 0 on a band
    return (1.0 - 0.85 * np.exp(-((distance / width) ** 2))).astype(np.float32)


def _filter_1d(n: int, fraction: float, kind: str) -> np.ndarray:
    """k-space weights along one axis (FFT order): acquired fraction, shaped by the vendor's filter."""
    k = np.abs(fft.fftfreq(n)) * 2.0 / fraction  # 1 at the edge of the acquired band
    if kind == "box":
        return (k <= 1.0).astype(np.float32)
    if kind == "tukey":
        w = np.where(k <= 0.6, 1.0, 0.5 * (1.0 + np.cos(np.pi * np.clip((k - 0.6) / 0.4, 0.0, 1.0))))
        return w.astype(np.float32)
    if kind == "fermi":
        return (1.0 / (1.0 + np.exp((k - 0.9) / 0.05))).astype(np.float32)
    raise ValueError(f"unknown k-space filter {kind!r}")


def acquire(signal: np.ndarray, protocol: Protocol, style: VendorStyle, rng, gain: np.ndarray) -> np.ndarray:
    """Signal (..., x, y) relative to blood -> magnitude image in vendor units (float32).

    Complex Gaussian noise is added before the k-space window, so noise is correlated at the
    vendor's resolution and the magnitude makes it Rician, as on a scanner.
    """
    shape = signal.shape
    read, phase = style.kspace_fraction
    window = np.outer(_filter_1d(shape[-2], read, style.kspace_filter),
                      _filter_1d(shape[-1], phase, style.kspace_filter))
    # Scale the input noise so that the noise after filtering has the vendor's sigma.
    sigma = protocol.noise / np.sqrt(np.mean(window**2))
    # The same float32 operations as (signal * gain).astype(complex64) plus noise, written in place.
    data = np.empty(shape, dtype=np.complex64)
    np.multiply(signal, gain, out=data.real, dtype=np.float32)
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise *= sigma
    data.real += noise
    rng.standard_normal(shape, dtype=np.float32, out=noise)
    np.multiply(noise, sigma, out=data.imag)
    kspace = fft.fft2(data, axes=(-2, -1), overwrite_x=True)
    kspace *= window
    image = np.abs(fft.ifft2(kspace, axes=(-2, -1), overwrite_x=True))
    image *= np.float32(protocol.blood_units)
    return image
