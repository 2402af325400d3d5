import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from auditors.features.pixels import l2_normalise
from auditors.privacy.neighbours import NeighbourIndex, cosine_distance_to_euclidean, euclidean_to_similarity


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    return rng.standard_normal((500, 24)).astype(np.float32), rng.standard_normal((130, 24)).astype(np.float32)


def test_l2_matches_sklearn_brute_force_with_streamed_batches(vectors):
    base, queries = vectors
    dist, ids = NeighbourIndex(base, metric="l2", batch_size=32).search(queries, 5)  # 130 queries: 5 batches
    ref_dist, ref_ids = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(base).kneighbors(queries)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, ref_dist**2, rtol=1e-4)  # FAISS returns squared distances


def test_inner_product_on_normalised_vectors_is_cosine_similarity(vectors):
    base, queries = (l2_normalise(v.copy()) for v in vectors)
    sim, ids = NeighbourIndex(base, metric="ip", batch_size=50).search(queries, 3)
    ref_dist, ref_ids = NearestNeighbors(n_neighbors=3, algorithm="brute", metric="cosine").fit(base).kneighbors(queries)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sim, 1 - ref_dist, atol=1e-5)
    # Euclidean distance between unit vectors recovered from the similarity.
    euclid, _ = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(base).kneighbors(queries)
    np.testing.assert_allclose(cosine_distance_to_euclidean(sim[:, 0]), euclid[:, 0], atol=1e-4)
    assert euclidean_to_similarity(float(cosine_distance_to_euclidean(0.3))) == pytest.approx(0.3)


def test_count_within_matches_brute_force(vectors):
    base, queries = (l2_normalise(v.copy()) for v in vectors)
    threshold = 0.3
    counts = NeighbourIndex(base, metric="ip", batch_size=40).count_within(queries, threshold)
    np.testing.assert_array_equal(counts, (queries @ base.T > threshold).sum(axis=1))
    l2_counts = NeighbourIndex(vectors[0], metric="l2", batch_size=40).count_within(vectors[1], 40.0)
    d2 = ((vectors[1][:, None, :] - vectors[0][None]) ** 2).sum(-1)
    np.testing.assert_array_equal(l2_counts, (d2 < 40.0).sum(axis=1))


def test_ivf_probing_every_list_is_exact(vectors):
    base, queries = vectors
    flat = NeighbourIndex(base, metric="l2").search(queries, 4)[1]
    ivf = NeighbourIndex(base, metric="l2", ivf_lists=8, nprobe=8)
    assert ivf.exact and ivf.describe()["index"] == "IndexIVFFlat"
    np.testing.assert_array_equal(ivf.search(queries, 4)[1], flat)
    partial = NeighbourIndex(base, metric="l2", ivf_lists=8, nprobe=1)
    assert not partial.exact


def test_k_is_capped_at_the_index_size_and_bad_input_is_refused(vectors):
    base, queries = vectors
    index = NeighbourIndex(base[:3], metric="l2")
    dist, ids = index.search(queries, 10)
    assert ids.shape == (len(queries), 3) and (ids >= 0).all()
    with pytest.raises(ValueError, match="dimensions"):
        index.search(queries[:, :5], 1)
    with pytest.raises(ValueError, match="metric"):
        NeighbourIndex(base, metric="cosine")
    with pytest.raises(ValueError, match="non-empty"):
        NeighbourIndex(base[:0])
