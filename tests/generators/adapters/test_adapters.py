"""White-box adapters on tiny networks built in the test (no download): a diffusers UNet2DModel and MONAI's
DiffusionModelUNet, each overfitted on a few training patients, must score those patients' slices as members
(lower denoising error than holdout patients'), survive a save/load round trip, and feed the audit's white-box
membership attack; `cmri-release audit --model` accepts the saved folder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from auditors.base import AuditContext, MembershipScorer
from cmri_release.core.sliceset import SliceSet
from generators.adapters import is_adapter_folder, load_adapter


def tiny_slices(n: int, seed: int, prefix: str) -> SliceSet:
    """n patients x 4 slices of 16 px: a bright disc (LV) in a ring (MYO) at a patient-specific place and size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    images, labels, ids = [], [], []
    for p in range(n):
        cy, cx, r = rng.uniform(6, 10), rng.uniform(6, 10), rng.uniform(2.5, 4)
        for z in range(4):
            d = np.hypot(yy - cy, xx - cx)
            lab = np.where(d < r * (1 - 0.15 * z), 3, np.where(d < r * (1 - 0.15 * z) + 1.5, 2, 0)).astype(np.uint8)
            img = np.choose(lab, [0.1, 0.0, 0.35, 0.9]) + rng.normal(0, 0.08, (16, 16))
            images.append(np.clip(img, 0, 1)), labels.append(lab), ids.append(f"{prefix}{p:02d}")
    k = len(images)
    return SliceSet(images=np.stack(images), labels=np.stack(labels), subject_ids=ids, vendors=["A"] * k,
                    phases=["ED"] * k, slice_pos=np.tile(np.linspace(0, 1, 4), n), slice_index=np.tile(np.arange(4), n),
                    has_label=np.ones(k, bool), spacing_mm=10.0, subject_meta={f"{prefix}{p:02d}": {} for p in range(n)})


def overfit(scorer, train: SliceSet, steps: int = 250) -> None:
    """Train the network's noise prediction on `train` only, so that it memorises those slices."""
    torch.manual_seed(0)
    net = scorer.network.train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x0, cond = scorer._inputs(train.images, train.labels)
    n_steps = scorer.scheduler.config.num_train_timesteps if hasattr(scorer.scheduler, "config") \
        else scorer.scheduler.num_train_timesteps
    for _ in range(steps):
        t = torch.randint(0, min(n_steps, 500), (len(x0),))
        noise = torch.randn_like(x0)
        x_t = scorer.add_noise(x0, noise, t)
        inputs = x_t if cond is None else torch.cat([x_t, cond], dim=1)
        loss = ((scorer.predict_noise(inputs, t) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()


def patient_auc(scorer, train: SliceSet, holdout: SliceSet) -> float:
    def per_patient(s):
        scores = scorer.membership_scores(s, seed=3)
        codes, subjects = s.subject_codes()
        return np.array([scores[codes == i].mean() for i in range(len(subjects))])

    member, nonmember = per_patient(train), per_patient(holdout)
    return roc_auc_score(np.r_[np.ones(len(member)), np.zeros(len(nonmember))], np.r_[member, nonmember])


@pytest.fixture(scope="module")
def splits():
    return tiny_slices(4, 1, "tr"), tiny_slices(4, 2, "ho")


def diffusers_scorer(conditioning: str):
    diffusers = pytest.importorskip("diffusers")
    from generators.adapters.diffusers_unet import DiffusersUNetScorer

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=1 + 4 * (conditioning == "mask"), out_channels=1,
                                 layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    return DiffusersUNetScorer(unet, diffusers.DDPMScheduler(num_train_timesteps=1000), conditioning=conditioning,
                               preprocess={"size": 16})


def monai_scorer():
    pytest.importorskip("monai")
    from monai.networks.nets import DiffusionModelUNet
    from monai.networks.schedulers import DDPMScheduler

    from generators.adapters.monai_unet import MonaiDiffusionScorer

    kwargs = dict(spatial_dims=2, in_channels=5, out_channels=1, channels=(16, 32), attention_levels=(False, False),
                  num_res_blocks=1, norm_num_groups=8)
    torch.manual_seed(0)
    return MonaiDiffusionScorer(DiffusionModelUNet(**kwargs), DDPMScheduler(num_train_timesteps=1000),
                                network_kwargs=kwargs, scheduler_kwargs={"num_train_timesteps": 1000},
                                conditioning="mask", preprocess={"size": 16})


MAKERS = [lambda: diffusers_scorer("none"), lambda: diffusers_scorer("mask"), monai_scorer]
IDS = ["diffusers", "diffusers-mask", "monai"]


@pytest.mark.slow  # ~15-20 s of CPU each (250 training steps)
@pytest.mark.parametrize("make", MAKERS, ids=IDS)
def test_an_overfitted_network_gives_its_training_patients_away(make, splits):
    train, holdout = splits
    scorer = make()
    overfit(scorer, train)
    assert patient_auc(scorer, train, holdout) >= 0.9


@pytest.mark.parametrize("make", MAKERS, ids=IDS)
def test_scores_are_deterministic_and_survive_a_save_load_round_trip(make, splits, tmp_path):
    train, holdout = splits
    scorer = make()
    assert isinstance(scorer, MembershipScorer)
    scores = scorer.membership_scores(train, seed=3)
    assert scores.shape == (len(train),) and np.isfinite(scores).all()
    assert np.array_equal(scores, scorer.membership_scores(train, seed=3))  # deterministic for a seed
    saved = scorer.save(tmp_path / "model")
    assert is_adapter_folder(saved)
    again = load_adapter(saved)
    assert type(again) is type(scorer) and again.preprocess == {"size": 16}
    assert np.allclose(again.membership_scores(holdout, seed=5), scorer.membership_scores(holdout, seed=5), atol=1e-5)


def test_the_audit_attacks_an_adapter_white_box(splits):
    from auditors.privacy.lira import slice_scores

    train, holdout = splits
    scorer = diffusers_scorer("mask")
    overfit(scorer, train, steps=120)
    members, nonmembers = slice_scores(scorer, train, 0), slice_scores(scorer, holdout, 0)  # the MIA's white-box path
    assert members.shape == (len(train),) and nonmembers.shape == (len(holdout),)
    assert members.mean() > nonmembers.mean()
    assert scorer.model_card["generator"] == "diffusers-unet2d"


def test_unknown_adapter_kind_is_refused(tmp_path):
    from cmri_release.core.errors import InputError

    (tmp_path / "adapter.json").write_text('{"kind": "keras"}')
    with pytest.raises(InputError, match="unknown adapter kind 'keras'"):
        load_adapter(tmp_path)


def test_audit_model_option_loads_an_adapter_folder(splits, tmp_path):
    """`cmri-release audit --model FOLDER` goes through load_model: an adapter's folder gives the adapter."""
    from cmri_release.commands.audit_cmd import load_model

    scorer = diffusers_scorer("none")
    saved = scorer.save(tmp_path / "adapter")
    loaded = load_model(saved, "cpu")
    assert loaded.model_card["generator"] == "diffusers-unet2d"
    assert np.allclose(loaded.membership_scores(splits[1], 2), scorer.membership_scores(splits[1], 2), atol=1e-5)
