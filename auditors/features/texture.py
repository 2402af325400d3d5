"""Texture feature space: named per-slice statistics of noise, gradients, spatial structure and spectrum.

The learned spaces (the segmenter's pooled channels, the SimCLR embedding built to ignore noise and
gamma) cannot see texture: a blurred, noisy or blotchy slice, or one whose pixels were shuffled
inside each structure, keeps its anatomy and its per-structure histograms. These features are read
through the label map, per region (blood pool, myocardium, and the ring of background around the
heart), and each belongs to one family, so that checks can compare families separately:

- `noise`: the spread of the fine residual (image minus its Gaussian blur, sigma 1 px);
- `gradient`: the mean gradient magnitude;
- `structure`: mean, spread, the spread of the smooth component (sigma 2 px: blotches) and the
  correlation of neighbouring pixels at lags 1 and 2 (shuffling inside a structure drives it to 0);
- `spectrum`: the radially averaged power spectrum, in relative log power per radial band, of the
  whole slice and of the heart with its surroundings.

A region too small to measure on a slice (an apical slice without RV, say) gives NaN for its
features; callers average over what is there.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

REGIONS = {"blood": (1, 3), "myocardium": (2,), "surround": ()}  # surround: background ring around the heart
FAMILIES = ("noise", "gradient", "structure", "spectrum")
SPECTRUM_BANDS = 8
MIN_PIXELS = 6  # fewer pixels than this in a region: its statistics are NaN on that slice
_BATCH = 512


def _ring_width(size: int) -> int:
    return max(2, int(round(size / 10)))  # 3 px at 32 px: the pericardial fat, lungs and chest wall next to it


def region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """{region: (N, H, W) bool} for blood pool, myocardium and the background ring around the heart."""
    heart = labels > 0
    ring = ndimage.binary_dilation(heart, structure=np.ones((1, 3, 3), bool), iterations=_ring_width(labels.shape[-1]))
    out = {name: np.isin(labels, codes) for name, codes in REGIONS.items() if codes}
    out["surround"] = ring & ~heart
    return out


def _masked_stats(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice mean and standard deviation of `values` over `mask` (NaN where too few pixels)."""
    count = mask.sum(axis=(1, 2)).astype(np.float64)
    ok = count >= MIN_PIXELS
    safe = np.where(ok, count, 1.0)
    mean = (values * mask).sum(axis=(1, 2)) / safe
    var = (((values - mean[:, None, None]) ** 2) * mask).sum(axis=(1, 2)) / safe
    return np.where(ok, mean, np.nan), np.where(ok, np.sqrt(np.maximum(var, 0)), np.nan)


def _neighbour_correlation(image: np.ndarray, mask: np.ndarray, lag: int) -> np.ndarray:
    """Correlation of pixel pairs `lag` apart (horizontal and vertical pooled) with both pixels in the mask."""
    mean, _ = _masked_stats(image, mask)
    x = image - np.nan_to_num(mean)[:, None, None]
    num = np.zeros(len(image))
    den_a = np.zeros(len(image))
    den_b = np.zeros(len(image))
    pairs = np.zeros(len(image))
    for a, b, ma, mb in ((x[:, :, :-lag], x[:, :, lag:], mask[:, :, :-lag], mask[:, :, lag:]),
                         (x[:, :-lag], x[:, lag:], mask[:, :-lag], mask[:, lag:])):
        both = ma & mb
        num += (a * b * both).sum(axis=(1, 2))
        den_a += (a * a * both).sum(axis=(1, 2))
        den_b += (b * b * both).sum(axis=(1, 2))
        pairs += both.sum(axis=(1, 2))
    den = np.sqrt(den_a * den_b)
    ok = (pairs >= MIN_PIXELS) & (den > 1e-12)
    return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def radial_bands(size: int, bands: int = SPECTRUM_BANDS) -> np.ndarray:
    """(size, size) band index of each 2D frequency (-1: the DC term and the corners beyond Nyquist).

    Bands split the radius from the lowest frequency (1 cycle per slice) to Nyquist (size / 2 cycles)
    evenly, so none is empty from 4 * bands pixels up.
    """
    if size < 4 * bands:
        raise ValueError(f"a {bands}-band spectrum needs slices of at least {4 * bands} px, got {size}")
    f = np.fft.fftfreq(size) * size  # cycles per slice
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    band = np.floor((radius - 1) / (size / 2 - 1) * bands).astype(int)
    band[radius == size / 2] = bands - 1  # Nyquist on an axis closes the last band
    band[(radius < 1) | (band >= bands)] = -1
    return band


def radial_power_spectrum(images: np.ndarray, bands: int = SPECTRUM_BANDS) -> np.ndarray:
    """(N, bands) radially averaged power of each mean-removed image, as log10 of each band's share."""
    x = images - images.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(x)) ** 2
    band = radial_bands(images.shape[-1], bands)
    sums = np.stack([power[:, band == b].mean(axis=1) for b in range(bands)], axis=1)
    total = sums.sum(axis=1, keepdims=True)
    return np.log10(np.maximum(sums, 1e-20) / np.maximum(total, 1e-20))


class TextureFeatures:
    """`transform(images, labels) -> (N, D)` float64 named features (`names`, `families`); NaN: not measurable."""

    name = "texture"

    def __init__(self, size: int):
        self.size = int(size)
        self.names, self.families = self._layout()

    @staticmethod
    def _layout() -> tuple[list[str], list[str]]:
        names, families = [], []
        for region in REGIONS:
            for stat, family in (("residual_sd", "noise"), ("gradient", "gradient"), ("mean", "structure"),
                                 ("sd", "structure"), ("smooth_sd", "structure"), ("corr_lag1", "structure"),
                                 ("corr_lag2", "structure")):
                names.append(f"{region}.{stat}")
                families.append(family)
        for window in ("slice", "heart"):
            for b in range(SPECTRUM_BANDS):
                names.append(f"spectrum.{window}.band{b}")
                families.append("spectrum")
        return names, families

    def family_index(self, family: str) -> np.ndarray:
        if family not in FAMILIES:
            raise ValueError(f"unknown texture family {family!r}; known: {', '.join(FAMILIES)}")
        return np.flatnonzero(np.asarray(self.families) == family)

    def describe(self) -> dict:
        return {"name": self.name, "dim": len(self.names), "families": {f: int((np.asarray(self.families) == f).sum())
                                                                         for f in FAMILIES},
                "how": "per-region noise, gradient, spatial-structure statistics and radial power spectra, read "
                       "through the label map"}

    def transform(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float64)
        labels = np.asarray(labels)
        if images.ndim != 3 or images.shape != labels.shape or images.shape[-1] != self.size:
            raise ValueError(f"texture features need (N, {self.size}, {self.size}) images and labels of one shape, "
                             f"got {images.shape} and {labels.shape}")
        out = np.empty((len(images), len(self.names)))
        for start in range(0, len(images), _BATCH):
            out[start:start + _BATCH] = self._batch(images[start:start + _BATCH], labels[start:start + _BATCH])
        return out

    def _batch(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        smooth1 = ndimage.gaussian_filter(images, sigma=(0, 1.0, 1.0), mode="nearest")
        smooth2 = ndimage.gaussian_filter(images, sigma=(0, 2.0, 2.0), mode="nearest")
        gy, gx = np.gradient(images, axis=(1, 2))
        grad = np.hypot(gx, gy)
        cols = []
        masks = region_masks(labels)
        for region in REGIONS:
            m = masks[region]
            _, residual_sd = _masked_stats(images - smooth1, m)
            grad_mean, _ = _masked_stats(grad, m)
            mean, sd = _masked_stats(images, m)
            _, smooth_sd = _masked_stats(smooth2, m)
            cols += [residual_sd, grad_mean, mean, sd, smooth_sd, _neighbour_correlation(images, m, 1),
                     _neighbour_correlation(images, m, 2)]
        heart_window = ndimage.gaussian_filter((masks["surround"] | (labels > 0)).astype(np.float64),
                                               sigma=(0, 1.0, 1.0))
        heart = images - (images * heart_window).sum(axis=(1, 2), keepdims=True) / \
            np.maximum(heart_window.sum(axis=(1, 2), keepdims=True), 1e-12)
        spectra = [radial_power_spectrum(images), radial_power_spectrum(heart * heart_window)]
        return np.concatenate([np.stack(cols, axis=1)] + spectra, axis=1)


def texture_features(ctx, split: str) -> np.ndarray:
    """(N, D) texture features of one split's slices, computed once per audit (labels are required)."""
    slices = getattr(ctx, split)
    return ctx.shared(f"features.texture.{split}",
                      lambda: TextureFeatures(slices.size).transform(slices.images, slices.labels))


def get_texture_space(ctx) -> TextureFeatures:
    return ctx.shared("texture", lambda: TextureFeatures(ctx.train.size))
