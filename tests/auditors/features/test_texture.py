"""Texture features against brute-force references, and the faults they must see."""
import numpy as np
import pytest
from scipy import ndimage

from auditors.features.texture import (SPECTRUM_BANDS, TextureFeatures, _neighbour_correlation, radial_bands,
                                       radial_power_spectrum, region_masks)


def test_radial_spectrum_matches_a_loop_over_frequencies():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 32, 32))
    got = radial_power_spectrum(images)
    for i, img in enumerate(images):
        power = np.abs(np.fft.fft2(img - img.mean())) ** 2
        sums = np.zeros(SPECTRUM_BANDS)
        counts = np.zeros(SPECTRUM_BANDS)
        for u in range(32):
            for v in range(32):
                r = np.hypot(np.fft.fftfreq(32)[u] * 32, np.fft.fftfreq(32)[v] * 32)  # cycles per slice
                b = min(int(np.floor((r - 1) / 15 * SPECTRUM_BANDS)), SPECTRUM_BANDS - 1) if r <= 16 else -1
                if r >= 1 and b >= 0:
                    sums[b] += power[u, v]
                    counts[b] += 1
        means = sums / counts
        np.testing.assert_allclose(got[i], np.log10(means / means.sum()), rtol=1e-10)
    assert (radial_bands(32) >= 0).sum() > 0.7 * 1024
    with pytest.raises(ValueError, match="at least 32 px"):
        radial_bands(16)


def test_blur_moves_power_from_high_to_low_frequencies():
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(20, 32, 32))
    flat, blurred = radial_power_spectrum(noise), radial_power_spectrum(ndimage.gaussian_filter(noise, (0, 1, 1)))
    assert np.ptp(flat.mean(axis=0)) < 0.2  # white noise: every band about equal
    assert blurred.mean(axis=0)[-1] < flat.mean(axis=0)[-1] - 1 and blurred.mean(axis=0)[0] > flat.mean(axis=0)[0]


def test_neighbour_correlation_matches_numpy_on_a_full_mask():
    rng = np.random.default_rng(2)
    img = ndimage.gaussian_filter(rng.normal(size=(1, 24, 24)), (0, 1.5, 1.5))
    mask = np.ones_like(img, dtype=bool)
    got = _neighbour_correlation(img, mask, 1)[0]
    x = img[0] - img[0].mean()
    a = np.concatenate([x[:, :-1].ravel(), x[:-1].ravel()])
    b = np.concatenate([x[:, 1:].ravel(), x[1:].ravel()])
    assert got == pytest.approx((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()), rel=1e-12)
    assert 0.7 < got < 1  # smooth texture: neighbours alike
    shuffled = rng.permutation(img.ravel()).reshape(img.shape)
    assert abs(_neighbour_correlation(shuffled, mask, 1)[0]) < 0.1  # shuffled: no spatial structure


def test_regions_and_missing_structures(heart_slices):
    s = heart_slices(2, size=32, seed=0)
    masks = region_masks(s.labels)
    assert not (masks["surround"] & (s.labels > 0)).any() and masks["surround"].any(axis=(1, 2)).all()
    labels = s.labels.copy()
    labels[0][labels[0] == 1] = 0  # no RV on the first slice: blood is still the LV cavity
    labels[1][:] = 0  # no heart at all: per-region features are NaN, the slice spectrum is still there
    tf = TextureFeatures(32)
    x = tf.transform(s.images, labels)
    assert x.shape == (len(s), len(tf.names))
    assert np.isfinite(x[0]).all()
    blood = [tf.names.index(n) for n in tf.names if n.startswith("blood.")]
    assert np.isnan(x[1, blood]).all() and np.isfinite(x[1, tf.family_index("spectrum")][:SPECTRUM_BANDS]).all()
    with pytest.raises(ValueError, match="texture features need"):
        tf.transform(s.images[:, :16, :16], s.labels[:, :16, :16])
