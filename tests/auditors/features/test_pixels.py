import numpy as np
import pytest

from auditors.features.pixels import PixelFeatures


def test_inner_product_is_pearson_correlation_of_the_downsampled_slices():
    rng = np.random.default_rng(0)
    images = rng.random((5, 64, 64)).astype(np.float32)
    vectors = PixelFeatures(size=32).transform(images)
    assert vectors.shape == (5, 1024) and vectors.dtype == np.float32
    blocks = images.reshape(5, 32, 2, 32, 2).mean(axis=(2, 4)).reshape(5, -1)  # 2x2 area average
    np.testing.assert_allclose(vectors @ vectors.T, np.corrcoef(blocks), atol=1e-5)


def test_batches_constant_slices_and_upsampling():
    rng = np.random.default_rng(1)
    images = rng.random((7, 16, 16)).astype(np.float32)
    images[3] = 0.5  # constant: no correlation with anything, not NaN
    whole = PixelFeatures(size=8).transform(images)
    np.testing.assert_allclose(PixelFeatures(size=8, batch_size=2).transform(images), whole, atol=1e-6)
    assert np.all(whole[3] == 0) and np.isfinite(whole).all()
    assert PixelFeatures(size=32).transform(images).shape == (7, 1024)  # smaller slices are interpolated
    with pytest.raises(ValueError, match="N, H, W"):
        PixelFeatures().transform(images[0])
