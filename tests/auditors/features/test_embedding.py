import numpy as np
import pytest
import torch

from auditors.base import AuditContext
from auditors.features import EmbeddingConfig, features, get_embedder, train_embedder
from auditors.features.embedding import augment, nt_xent

TINY = EmbeddingConfig(steps=60, batch_size=32, dim=32)


def rings(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Rings and blobs of random centre, radius, thickness and brightness: distinct slices with shared structure."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)
        r, w = rng.uniform(3, size / 4), rng.uniform(1.5, 4)
        d = np.hypot(x - cx, y - cy)
        image = rng.uniform(0.5, 1.0) * (np.abs(d - r) < w) + rng.uniform(0.1, 0.4) * (d < r - w)
        bx, by = rng.uniform(0, size, 2)
        image += 0.6 * (np.hypot(x - bx, y - by) < rng.uniform(2, 5))
        out.append(image + 0.03 * rng.standard_normal((size, size)))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    images = rings(48)
    return images, train_embedder(images, TINY, seed=0, quiet=True)


def test_unit_vectors_and_deterministic_training(trained):
    images, embedder = trained
    z = embedder.transform(images)
    assert z.shape == (48, 32) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    again = train_embedder(images, TINY, seed=0, quiet=True).transform(images)
    np.testing.assert_allclose(again, z, atol=1e-5)
    described = embedder.describe()
    assert described["dim"] == 32 and described["training"]["steps"] == 60


def test_training_makes_augmented_views_find_their_source(trained):
    images, embedder = trained
    gen = torch.Generator().manual_seed(5)
    views = augment(torch.from_numpy(images)[:, None], TINY, gen)[:, 0].numpy()  # flips, rotations, gamma, noise

    def hits(e):
        return np.mean(np.argmax(e.transform(views) @ e.transform(images).T, axis=1) == np.arange(len(images)))

    untrained = train_embedder(images, EmbeddingConfig(steps=0, batch_size=32, dim=32), seed=0, quiet=True)
    assert hits(embedder) >= 1.5 * hits(untrained) and hits(embedder) > 0.25  # chance is 1/48


def test_nt_xent_prefers_matching_views():
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    assert nt_xent(z, z, 0.2) < nt_xent(z, z.roll(1, dims=0), 0.2)


def test_get_embedder_trains_once_on_train_only(monkeypatch):
    train, other = rings(20, seed=1), rings(10, seed=2)
    seen = []
    import auditors.features.embedding as embedding

    real = embedding.train_embedder
    monkeypatch.setattr(embedding, "train_embedder", lambda images, *a, **k: seen.append(len(images)) or real(
        images, *a, **k))

    class Slices:  # only `.images` is read
        def __init__(self, images):
            self.images = images

    ctx = AuditContext(train=Slices(train), holdout=Slices(other), synthetic=Slices(other), quiet=True,
                       options={"embedding_steps": 5, "embedding_batch_size": 16, "embedding_dim": 16})
    assert get_embedder(ctx) is get_embedder(ctx)
    assert features(ctx, "embedding", "holdout").shape == (10, 16)
    assert seen == [20]
    from auditors.base import validate_options

    with pytest.raises(ValueError, match="did you mean 'embedding_steps'"):  # a typo never reaches the config
        validate_options({"embedding_stepz": 3})
