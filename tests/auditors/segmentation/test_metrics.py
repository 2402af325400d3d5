import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist, directed_hausdorff
from sklearn.metrics import f1_score

from auditors.segmentation import metrics


def _random_labels(rng, n=6, size=24):
    """Blobs of each structure, smoothed noise thresholded: irregular shapes, some slices missing one."""
    out = np.zeros((n, size, size), np.uint8)
    for k in (1, 2, 3):
        field = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 2.5, 2.5))
        out[field > np.quantile(field, 0.8)] = k
    out[0][out[0] == 1] = 0  # slice 0 has no RV
    return out


def _brute_force_hd(a, b, spacing, q):
    """Reference: every pair of surface points, explicit distances in mm."""
    pa = np.argwhere(metrics.surface(a)) * np.asarray(spacing)
    pb = np.argwhere(metrics.surface(b)) * np.asarray(spacing)
    d = cdist(pa, pb)
    return np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), q)


def test_dice_matches_sklearn_f1_on_flattened_masks():
    rng = np.random.default_rng(0)
    target, pred = _random_labels(rng), _random_labels(rng)
    scores = metrics.slice_scores(pred, target, 1.5, with_hd95=False)["dice"]
    for name, k in metrics.STRUCTURE_LABELS.items():
        for i in range(len(pred)):
            t, p = (target[i] == k).ravel(), (pred[i] == k).ravel()
            if t.any() or p.any():
                assert scores[name][i] == pytest.approx(f1_score(t, p))
        # The whole stack as one volume, too.
        assert metrics.dice(pred == k, target == k) == pytest.approx(f1_score((target == k).ravel(),
                                                                                (pred == k).ravel()))


def test_dice_empty_conventions():
    empty = np.zeros((8, 8), bool)
    full = np.ones((8, 8), bool)
    assert math.isnan(metrics.dice(empty, empty))
    assert metrics.dice(full, empty) == 0.0 and metrics.dice(empty, full) == 0.0
    assert metrics.dice(full, full) == 1.0
    batch = metrics.dice_batch(np.stack([empty, full, full]), np.stack([empty, empty, full]))
    assert math.isnan(batch[0]) and batch[1] == 0.0 and batch[2] == 1.0
    assert metrics.nanmean(batch) == 0.5  # the undefined slice is left out, not counted as 0 or 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.25, 0.8), (8.0, 1.5, 1.5)])
def test_hd95_matches_brute_force_distances_in_mm(spacing):
    rng = np.random.default_rng(1)
    shape = (5, 20, 20) if len(spacing) == 3 else (28, 28)
    for _ in range(4):
        a = ndimage.gaussian_filter(rng.normal(size=shape), 2) > 0.05
        b = ndimage.gaussian_filter(rng.normal(size=shape), 2) > 0.05
        assert metrics.hd95(a, b, spacing) == pytest.approx(_brute_force_hd(a, b, spacing, 95))


def test_hd100_is_the_hausdorff_distance_of_scipy():
    rng = np.random.default_rng(2)
    a = ndimage.gaussian_filter(rng.normal(size=(30, 30)), 3) > 0
    b = np.roll(a, 3, axis=0)
    pa, pb = (np.argwhere(metrics.surface(m)) * [1.5, 1.5] for m in (a, b))
    reference = max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])
    assert metrics.hausdorff(a, b, 1.5, percentile=100) == pytest.approx(reference)


def test_hd95_of_a_shift_is_the_shift_and_empty_conventions():
    disk = np.hypot(*np.meshgrid(np.arange(40) - 20, np.arange(40) - 20, indexing="ij")) < 8
    assert metrics.hd95(disk, disk, 1.5) == 0.0
    assert metrics.hd95(np.roll(disk, 2, axis=1), disk, 1.5) == pytest.approx(3.0)  # 2 px at 1.5 mm
    empty = np.zeros_like(disk)
    assert math.isnan(metrics.hd95(empty, empty, 1.5))
    assert metrics.hd95(empty, disk, 1.5) == pytest.approx(math.hypot(39 * 1.5, 39 * 1.5))


def test_volume_scores_stack_slices_of_each_volume():
    rng = np.random.default_rng(3)
    target = _random_labels(rng, n=6)
    pred = target.copy()
    pred[3:] = _random_labels(rng, n=3)  # volume "b" is wrong, volume "a" is perfect
    ids = np.array(["a"] * 3 + ["b"] * 3)
    out = metrics.volume_scores(pred, target, ids, np.array([2, 0, 1, 0, 1, 2]), 1.5, {"a": 8.0, "b": 10.0})
    assert out["volumes"] == ["a", "b"]
    for name, k in metrics.STRUCTURE_LABELS.items():
        assert out["dice"][name][0] == 1.0 and out["hd95"][name][0] == 0.0
        b = ids == "b"
        assert out["dice"][name][1] == pytest.approx(f1_score((target[b] == k).ravel(), (pred[b] == k).ravel()))
        order = np.array([3, 4, 5])
        ref = _brute_force_hd(pred[order] == k, target[order] == k, (10.0, 1.5, 1.5), 95)
        assert out["hd95"][name][1] == pytest.approx(ref)
    summary = metrics.summarise(out["dice"])
    assert summary["mean"] == pytest.approx(np.mean([summary[n] for n in ("RV", "MYO", "LV")]))
