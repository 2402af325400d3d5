import numpy as np
import pytest
import torch

from auditors.segmentation import metrics
from auditors.segmentation.train import TrainConfig, augment, pad_to_multiple, steps_for, train_segmenter
from auditors.segmentation.unet import UNet, UNetConfig


def test_augmentation_moves_image_and_label_together():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 4, size=(16, 24, 24))).long()
    images = labels[:, None].float()  # the image *is* the label: any misalignment would show
    out_img, out_lab = augment(images, labels, rng, max_shift=4, intensity_jitter=False)
    assert torch.equal(out_img[:, 0].long(), out_lab)
    assert not torch.equal(out_lab, labels)  # something did move
    # Shifts pad with background, never wrap: an all-foreground slice gains a background border.
    full = torch.full((8, 1, 16, 16), 3.0)
    _, lab = augment(full, full[:, 0].long(), np.random.default_rng(1), max_shift=3, intensity_jitter=False)
    assert (lab == 0).any() and set(lab.unique().tolist()) <= {0, 3}


def test_intensity_jitter_changes_intensities_not_labels():
    rng = np.random.default_rng(2)
    labels = torch.from_numpy(rng.integers(0, 4, size=(8, 16, 16))).long()
    images = labels[:, None].float() / 3
    out_img, out_lab = augment(images, labels, rng, max_shift=0, intensity_jitter=True)
    assert not torch.allclose(out_img, images)
    # Each slice's flips are the only geometry applied: the label is one of its 4 flips.
    for i in range(len(labels)):
        assert any(torch.equal(out_lab[i], f) for f in (labels[i], labels[i].flip(-1), labels[i].flip(-2),
                                                        labels[i].flip(-1).flip(-2)))


def test_unet_shapes_features_and_padding():
    model = UNet(UNetConfig(widths=(8, 16, 32), groups=4))
    x = torch.randn(2, 1, 20, 20)
    padded, (h, w) = pad_to_multiple(x, model.divisor)
    assert padded.shape[-2:] == (20, 20) and (h, w) == (20, 20)
    padded, (h, w) = pad_to_multiple(torch.randn(2, 1, 18, 18), model.divisor)
    assert padded.shape[-2:] == (20, 20) and (h, w) == (18, 18)
    assert model(padded).shape == (2, 4, 20, 20)
    assert model.pooled_features(padded).shape == (2, 8 + 16 + 32)
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.randn(1, 1, 18, 18))
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(widths=(6, 12), groups=4)


def test_steps_for_an_epoch_budget():
    assert steps_for(2, 320, 32) == 20 and steps_for(2, 330, 32, minimum=5) == 21
    assert steps_for(0.1, 32, 32) == 20  # the floor
    with pytest.raises(ValueError):
        steps_for(0, 10, 32)


def test_training_is_seeded_and_leaves_the_callers_rng_alone(heart_slices):
    train = heart_slices(4, seed=10)
    a = train_segmenter(train, TrainConfig(steps=4, batch_size=8), seed=3)
    before = torch.get_rng_state()
    b = train_segmenter(train, TrainConfig(steps=4, batch_size=8), seed=3)
    assert torch.equal(before, torch.get_rng_state())
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(pa, pb)
    c = train_segmenter(train, TrainConfig(steps=4, batch_size=8), seed=4)
    assert not torch.equal(a.model.head.weight, c.model.head.weight)
    with pytest.raises(ValueError, match="no annotated slice"):
        train_segmenter(train.select(np.zeros(len(train), bool)), TrainConfig(steps=1))


def test_training_learns_to_segment_new_patients(heart_slices):
    train, test = heart_slices(12, seed=10), heart_slices(3, seed=11)
    config = TrainConfig(steps=80, batch_size=32)
    segmenter = train_segmenter(train, config, seed=0)
    pred = segmenter.predict(test.images)
    assert pred.dtype == np.uint8 and pred.shape == test.labels.shape
    dice = metrics.summarise(metrics.slice_scores(pred, test.labels, test.spacing_mm, with_hd95=False)["dice"])
    assert dice["mean"] > 0.8, dice
    feats = segmenter.features(test.images)
    assert feats.shape == (len(test), sum(config.unet.widths)) and np.isfinite(feats).all()
    assert segmenter.log["steps"] == 80 and segmenter.log["subjects"] == 12


@pytest.mark.cuda
def test_training_on_cuda_learns_and_predicts_on_numpy(heart_slices):
    train, test = heart_slices(12, seed=10), heart_slices(3, seed=11)
    segmenter = train_segmenter(train, TrainConfig(steps=80, batch_size=32), seed=0, device="cuda")
    assert next(segmenter.model.parameters()).is_cuda
    pred = segmenter.predict(test.images)
    assert isinstance(pred, np.ndarray) and pred.shape == test.labels.shape
    dice = metrics.summarise(metrics.slice_scores(pred, test.labels, test.spacing_mm, with_hd95=False)["dice"])
    assert dice["mean"] > 0.8, dice
    assert np.isfinite(segmenter.features(test.images)).all()


def test_batch_stream_passes_over_every_slice_or_keeps_a_fixed_share():
    from auditors.segmentation.train import BatchStream
    plain = BatchStream(20, 4, np.random.default_rng(0))
    first = np.concatenate([plain.next() for _ in range(5)])
    assert sorted(first) == list(range(20))  # one pass: every slice once
    assert np.array_equal(first[:20], np.random.default_rng(0).permutation(20))  # the former shuffling, unchanged
    second = np.arange(100) >= 90  # 10 synthetic slices among 100
    mixed = BatchStream(100, 8, np.random.default_rng(1), second, 0.5)
    drawn = np.concatenate([mixed.next() for _ in range(200)])
    assert len(drawn) == 1600 and second[drawn].mean() == pytest.approx(0.5, abs=0.03)
    odd = BatchStream(100, 8, np.random.default_rng(2), second, 0.3)  # 2.4 per batch: the share holds on average
    assert second[np.concatenate([odd.next() for _ in range(500)])].mean() == pytest.approx(0.3, abs=0.02)
    with pytest.raises(ValueError, match="share"):
        BatchStream(10, 4, np.random.default_rng(0), np.zeros(10, bool), 0.5)


def test_the_step_cap_bounds_the_audit_budget(heart_slices):
    from auditors.base import AuditContext
    from auditors.segmentation.train import audit_train_config
    train = heart_slices(12, seed=0)  # 96 slices
    ctx = AuditContext(train=train, holdout=train, synthetic=train, options={"utility_epochs": 12})
    assert audit_train_config(ctx).steps == 144
    ctx.options["segmenter_max_steps"] = 100
    assert audit_train_config(ctx).steps == 100


def test_training_gives_the_same_weights_whatever_the_thread_count(heart_slices):
    """A re-audit on a machine with another core count must train the same segmenter (verify's tolerances):
    on the CPU the training runs on one thread and leaves the caller's thread count as it was."""
    train = heart_slices(4, seed=10)
    previous = torch.get_num_threads()
    weights = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            seg = train_segmenter(train, TrainConfig(steps=30, batch_size=8), seed=3)
            assert torch.get_num_threads() == threads
            weights.append(torch.cat([p.detach().flatten() for p in seg.model.parameters()]))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(weights[0], weights[1])
