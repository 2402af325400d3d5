"""One contract over every registered generator: built from the registry, built directly, and after a save/load
round trip, a fitted generator gives the same samples and membership scores for the same seed (diffusers-style
tiny models: 16 px, 1 epoch, 2 sampling steps)."""
from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest
import torch

import generators
from generators import create_generator, load_generator
from generators.ddpm import DDPM
from generators.flow import FlowMatching
from generators.gan import ConditionalGAN
from generators.vae import ConditionalVAE

DIRECT = {"flow": FlowMatching, "ddpm": DDPM, "vae": ConditionalVAE, "gan": ConditionalGAN}
TINY = {"network": "tiny", "batch_size": 8, "sample_batch": 5}
STEPS = {"flow": {"steps": 2}, "ddpm": {"steps": 2}}


def tiny_config(name: str) -> dict:
    return {**TINY, **STEPS.get(name, {})}


def test_registry_holds_exactly_the_known_generators():
    assert set(generators.GENERATORS) == set(DIRECT)
    for name, cls in DIRECT.items():
        assert generators.GENERATORS[name] is cls


def test_unknown_generator_fails_loudly():
    with pytest.raises(ValueError, match="unknown generator 'nope'.*known: ddpm, flow, gan, vae"):
        create_generator("nope")


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_unknown_setting_is_refused(name):
    with pytest.raises(ValueError, match="unknown setting"):
        create_generator(name, not_a_setting=1)


@pytest.fixture(scope="module", params=sorted(DIRECT))
def fitted(request, toy_train, tmp_path_factory):
    name = request.param
    from_registry = create_generator(name, **tiny_config(name))
    log = from_registry.fit(toy_train, epochs=1, seed=0, quiet=True)
    direct = DIRECT[name](**tiny_config(name))
    direct.fit(toy_train, epochs=1, seed=0, quiet=True)
    folder = tmp_path_factory.mktemp(name) / "model"
    from_registry.save(folder)
    loaded = load_generator(folder)
    return name, from_registry, direct, loaded, log, folder


def _request(toy_train, n=7):
    idx = np.arange(0, len(toy_train), max(len(toy_train) // n, 1))[:n]
    return toy_train.labels[idx], toy_train.vendors[idx]


def test_training_log(fitted, toy_train):
    name, gen, _, _, log, _ = fitted
    assert log["steps"] == int(np.ceil(len(toy_train) / TINY["batch_size"]))
    assert log["epochs"] == pytest.approx(1.0)
    assert all(np.isfinite(v) for v in log["final_loss"].values())


def test_samples_are_images_of_the_right_shape(fitted, toy_train):
    _, gen, _, _, _, _ = fitted
    labels, vendors = _request(toy_train)
    images = gen.sample(labels, vendors, seed=3)
    assert images.shape == labels.shape and images.dtype == np.float32
    assert np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0


def test_same_seed_same_samples_everywhere(fitted, toy_train):
    _, gen, direct, loaded, _, _ = fitted
    labels, vendors = _request(toy_train)
    reference = gen.sample(labels, vendors, seed=3)
    np.testing.assert_array_equal(gen.sample(labels, vendors, seed=3), reference)
    np.testing.assert_allclose(direct.sample(labels, vendors, seed=3), reference, atol=1e-5)
    np.testing.assert_allclose(loaded.sample(labels, vendors, seed=3), reference, atol=1e-6)
    assert not np.allclose(gen.sample(labels, vendors, seed=4), reference)


def test_a_sample_does_not_depend_on_its_batch(fitted, toy_train):
    _, gen, _, _, _, _ = fitted
    labels, vendors = _request(toy_train)
    alone = gen.sample(labels[:2], vendors[:2], seed=3)  # sample_batch is 5: the full request spans two batches
    np.testing.assert_allclose(gen.sample(labels, vendors, seed=3)[:2], alone, atol=1e-5)


def test_a_stack_shares_its_noise_by_position(fitted, toy_train):
    """Slices given one position (ED and ES of one place) get the same draw: same label map, same image; the
    stack's draws are reproducible and batch-independent like single slices'."""
    _, gen, _, loaded, _, _ = fitted
    labels, vendors = _request(toy_train, 3)
    stack = np.concatenate([labels, labels])  # ED then ES, the same maps at positions 0, 1, 2
    positions = np.tile(np.arange(3), 2)
    images = gen.sample(stack, vendors[0], seed=3, positions=positions)
    np.testing.assert_allclose(images[:3], images[3:], atol=1e-5)
    np.testing.assert_allclose(loaded.sample(stack, vendors[0], seed=3, positions=positions), images, atol=1e-5)
    with pytest.raises(ValueError, match="positions"):
        gen.sample(stack, vendors[0], seed=3, positions=positions[:-1])


@pytest.mark.parametrize("bad", [1.5, -0.1, "high"])
def test_a_stack_noise_correlation_outside_0_1_is_refused_on_construction(bad):
    with pytest.raises(ValueError, match="stack_noise_correlation"):
        create_generator("flow", stack_noise_correlation=bad)


def test_stack_noise_is_standard_normal_with_the_set_neighbour_correlation(fitted):
    _, gen, _, _, _, _ = fitted
    generator = torch.Generator().manual_seed(0)
    chains = torch.stack([gen._stack_noise(np.arange(5), 16, generator).reshape(5, -1) for _ in range(1000)])
    rho = gen.config["stack_noise_correlation"]
    # every position standard normal (each slice keeps the model's distribution), neighbours correlated by rho
    assert chains.mean().item() == pytest.approx(0.0, abs=0.03)
    np.testing.assert_allclose(chains.std(dim=(0, 2)).numpy(), 1.0, atol=0.03)
    correlation = (chains[:, :-1] * chains[:, 1:]).mean() / chains.var()
    assert correlation.item() == pytest.approx(rho, abs=0.03)
    assert torch.equal(gen._stack_noise([2, 0, 2], 16, torch.Generator().manual_seed(0))[0],
                       gen._stack_noise([2, 0, 2], 16, torch.Generator().manual_seed(0))[2])


def test_membership_scores(fitted, toy_train):
    _, gen, _, loaded, _, _ = fitted
    part = toy_train.select(np.arange(12))
    part.has_label[-2:] = False
    scores = gen.membership_scores(part, seed=1)
    assert scores.shape == (12,)
    assert np.isfinite(scores[:-2]).all() and np.isnan(scores[-2:]).all()
    np.testing.assert_allclose(loaded.membership_scores(part, seed=1), scores, rtol=1e-5, atol=1e-6)


def test_model_card(fitted, toy_train):
    name, gen, _, loaded, _, folder = fitted
    card = json.loads((folder / "model_card.json").read_text())
    expected = hashlib.sha256("\n".join(sorted(toy_train.subjects)).encode()).hexdigest()
    assert card["generator"] == name
    assert card["training_data"]["subjects_sha256"] == expected
    assert card["training_data"]["n_subjects"] == len(toy_train.subjects)
    assert card["training_data"]["n_slices"] == len(toy_train)
    assert card["privacy"] == {"dp": False, "unit": "patient"}
    assert card["training"]["steps"] > 0 and card["seed"] == 0
    assert set(card["checksums"]) == {"config.json", "weights.pt", "masks.json", "vendors.json"}
    for path in folder.iterdir():  # no real subject id anywhere in the model folder
        text = path.read_bytes()
        assert not any(sid.encode() in text for sid in toy_train.subjects), path.name
    assert loaded.model_card["training_data"] == card["training_data"]


def test_networks_pass_opacus_validation(fitted):
    from opacus.validators import ModuleValidator
    _, gen, _, _, _, _ = fitted
    for name, module in gen._networks().items():
        assert ModuleValidator.validate(copy.deepcopy(module).train(), strict=False) == [], name
        assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in module.modules()), name


def test_bad_requests_are_refused(fitted, toy_train):
    _, gen, _, _, _, _ = fitted
    labels, vendors = _request(toy_train, 2)
    with pytest.raises(ValueError, match="not one this model was trained on"):
        gen.sample(labels, ["Z", "Z"], seed=0)
    with pytest.raises(ValueError, match="trained at 16 px"):
        gen.sample(np.zeros((1, 32, 32), np.uint8), "A", seed=0)
    with pytest.raises(ValueError, match="2 label maps but 3 vendors"):
        gen.sample(labels, ["A", "A", "A"], seed=0)
    from cmri_release.core.errors import InputError
    with pytest.raises(InputError, match="unexpected label values"):
        gen.sample(np.full((1, 16, 16), 7, np.uint8), "A", seed=0)


def test_flow_with_classifier_free_guidance(toy_train):
    gen = create_generator("flow", **tiny_config("flow"), cond_dropout=0.2, guidance=2.0)
    gen.fit(toy_train, epochs=1, quiet=True)
    labels, vendors = _request(toy_train, 3)
    images = gen.sample(labels, vendors, seed=0)
    assert np.isfinite(images).all() and images.shape == labels.shape
    assert gen.model_card["sampling"]["network_evaluations_per_slice"] == 2 * 3  # Heun, 2 steps, two passes
    with pytest.raises(ValueError, match="needs an unconditional model"):
        create_generator("flow", guidance=2.0)


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(DIRECT))
def test_trained_on_cuda_then_sampled_and_scored_on_either_device(name, toy_train, tmp_path):
    gen = create_generator(name, **tiny_config(name))
    log = gen.fit(toy_train, epochs=1, seed=0, device="cuda", quiet=True)
    assert all(np.isfinite(v) for v in log["final_loss"].values())
    assert gen.model_card["training"]["device"] == "cuda"
    assert all(p.is_cuda for m in gen._networks().values() for p in m.parameters())
    labels, vendors = _request(toy_train)
    on_gpu = gen.sample(labels, vendors, seed=3)
    assert on_gpu.shape == labels.shape and np.isfinite(on_gpu).all()
    part = toy_train.select(np.arange(12))
    scores_gpu = gen.membership_scores(part, seed=1)
    gen.save(tmp_path / "model")
    on_cpu = load_generator(tmp_path / "model")  # weights saved from the GPU load on a CPU-only machine
    # The initial noise is drawn on the CPU: the same samples on either device, up to TF32 and kernel order.
    np.testing.assert_allclose(on_cpu.sample(labels, vendors, seed=3), on_gpu, atol=0.05)
    np.testing.assert_allclose(on_cpu.membership_scores(part, seed=1), scores_gpu, rtol=0.05, atol=0.05)
    back = load_generator(tmp_path / "model", device="cuda")
    np.testing.assert_allclose(back.sample(labels, vendors, seed=3), on_gpu, atol=1e-3)
