import numpy as np
import pytest
from scipy import ndimage

from auditors.privacy.robust_match import candidates, robust_similarity, spectrum_vectors, variants


def _reference_best(query, ref, max_shift):
    """Brute force: Pearson correlation (np.corrcoef) of the reference's central crop with every query window."""
    size, m = ref.shape[0], max_shift
    crop = ref[m:size - m, m:size - m].ravel()
    return max(np.corrcoef(query[dy:dy + size - 2 * m, dx:dx + size - 2 * m].ravel(), crop)[0, 1]
               for dy in range(2 * m + 1) for dx in range(2 * m + 1))


def test_shift_search_matches_a_brute_force_reference(blobs):
    s = blobs(3, slices=2, size=32, seed=0)
    q, ref = s.images[:3], s.images[3:]
    cand = np.tile(np.arange(len(ref)), (len(q), 1))
    best, which = robust_similarity(q, ref, cand, max_shift=2, rotations=(0.0,), flips=("none",))
    for i in range(len(q)):
        expected = [_reference_best(q[i], r, 2) for r in ref]
        assert best[i] == pytest.approx(max(expected), abs=1e-5) and which[i] == int(np.argmax(expected))


def test_shifted_rotated_flipped_rescaled_copies_are_found(blobs):
    s = blobs(6, slices=3, size=32, seed=1, noise=0.01)
    codes, _ = s.subject_codes()
    rng = np.random.default_rng(0)
    copies = []
    for image in s.images:
        x = ndimage.rotate(np.fliplr(image), 4.0, reshape=False, order=1, mode="nearest")
        x = ndimage.shift(x, (3, -2), order=1, mode="nearest") * 1.1 + 0.2 + 0.02 * rng.standard_normal(x.shape)
        copies.append(x)
    copies = np.stack(copies).astype(np.float32)
    cand = candidates(copies, codes, s.images, codes, k=4, patients=2)
    assert np.mean([codes[i] in codes[cand[i]] for i in range(len(cand))]) >= 5 / 6  # the right patient, mostly
    best, which = robust_similarity(copies, s.images, cand)
    assert np.mean(best > 0.9) >= 5 / 6 and np.mean(which == np.arange(len(s.images))) >= 5 / 6
    plain, _ = robust_similarity(copies, s.images, cand, max_shift=0, rotations=(0.0,), flips=("none",))
    assert np.median(plain) < 0.8  # without the search the same copies look like strangers


def test_spectrum_is_flip_and_shift_invariant_and_variants_keep_the_identity(blobs):
    x = blobs(1, slices=1, size=32, seed=2).images
    v = spectrum_vectors(np.concatenate([x, x[:, :, ::-1], np.roll(x, 2, axis=2)]))
    assert v[0] @ v[1] == pytest.approx(1.0, abs=1e-5) and v[0] @ v[2] > 0.95
    bank = variants(__import__("torch").from_numpy(x), (-5.0, 0.0, 5.0), ("none", "h"))
    assert bank.shape == (1, 6, 32, 32) and np.allclose(bank[0, 1].numpy(), x[0])
    with pytest.raises(ValueError, match="max_shift"):
        robust_similarity(x, x, np.zeros((1, 1), int), max_shift=15)
