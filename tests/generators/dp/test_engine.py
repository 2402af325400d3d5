"""DP-SGD end to end: a tiny DP run of each generator, the ledger against the accountants, the mechanism itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant

import generators
from generators import DPConfig, create_generator, load_generator
from generators.dp import open_account
from generators.dp.accounting import RDP_ALPHAS
from generators.dp.engine import PrivacySettingsError, PrivateTraining, default_delta
from generators.training import Objective, SliceTensors, TrainSettings

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook", "ignore:Secure RNG turned off",
                                        "ignore:divide by zero:RuntimeWarning")

TINY = {"network": "tiny", "batch_size": 2, "sample_batch": 5}
STEPS = {"flow": {"steps": 2}, "ddpm": {"steps": 2}}
EPSILON, EPOCHS = 8.0, 2
LEDGER_KEYS = {"dp", "epsilon", "delta", "unit", "accountant", "noise_multiplier", "max_grad_norm", "sample_rate",
               "steps", "epochs", "secure_mode", "epsilon_prv", "epsilon_rdp"}


@pytest.fixture(scope="module", params=sorted(generators.GENERATORS))
def dp_fitted(request, toy_train):
    name = request.param
    gen = create_generator(name, **TINY, **STEPS.get(name, {}))
    log = gen.fit(toy_train, DPConfig(epsilon=EPSILON), epochs=EPOCHS, seed=0, quiet=True)
    return name, gen, log


def test_dp_run_of_each_generator_records_a_patient_ledger(dp_fitted, toy_train):
    name, gen, log = dp_fitted
    ledger = gen.model_card["privacy"]
    assert LEDGER_KEYS <= set(ledger)
    assert ledger["dp"] is True and ledger["unit"] == "patient"
    n_patients = len(toy_train.subjects)
    assert ledger["n_patients"] == n_patients
    assert ledger["delta"] == pytest.approx(default_delta(n_patients))
    steps_per_epoch = int(np.ceil(n_patients / TINY["batch_size"]))
    assert ledger["sample_rate"] == pytest.approx(1 / steps_per_epoch)
    assert ledger["steps"] == log["steps"] == EPOCHS * steps_per_epoch
    assert ledger["epochs"] == pytest.approx(EPOCHS)
    assert log["privacy"] == ledger
    assert all(np.isfinite(v) for v in log["final_loss"].values())


def test_ledger_matches_the_accountants_for_the_steps_taken(dp_fitted):
    _, gen, _ = dp_fitted
    ledger = gen.model_card["privacy"]
    history = [tuple(h) for h in ledger["history"]]
    # Mask model releases (un-subsampled Gaussian), then the DP-SGD steps at the ledger's noise and rate.
    assert history[-1] == pytest.approx((ledger["noise_multiplier"], ledger["sample_rate"], ledger["steps"]), rel=1e-5)
    assert len(ledger["releases"]) == len(history) - 1 and all(h[1] == 1.0 for h in history[:-1])
    prv, rdp = PRVAccountant(), RDPAccountant()
    prv.history = list(history)
    rdp.history = list(history)
    eps_prv, eps_rdp = prv.get_epsilon(ledger["delta"]), rdp.get_epsilon(ledger["delta"], alphas=RDP_ALPHAS)
    assert ledger["epsilon_prv"] == pytest.approx(eps_prv, rel=1e-4)
    assert ledger["epsilon_rdp"] == pytest.approx(eps_rdp, rel=1e-4)
    assert ledger["epsilon"] == pytest.approx(max(eps_prv, eps_rdp), rel=1e-4)


def test_target_epsilon_is_met(dp_fitted):
    _, gen, _ = dp_fitted
    eps = gen.model_card["privacy"]["epsilon"]
    assert 0.95 * EPSILON <= eps <= EPSILON


def test_dp_model_folder_keeps_the_ledger(dp_fitted, toy_train, tmp_path):
    _, gen, _ = dp_fitted
    gen.save(tmp_path / "model")
    loaded = load_generator(tmp_path / "model")
    assert loaded.model_card["privacy"] == gen.model_card["privacy"]
    images = loaded.sample(toy_train.labels[:3], toy_train.vendors[:3], seed=1)
    assert images.shape == toy_train.labels[:3].shape and np.isfinite(images).all()
    # The mask generator was fitted with DP too, and still draws whole patients.
    stacks = loaded.mask_model.sample(2, seed=0)
    assert all(s.labels["ED"].shape == s.labels["ES"].shape and s.labels["ED"].shape[1:] == (16, 16) for s in stacks)


def test_plain_models_say_they_are_not_dp(toy_train):
    gen = create_generator("vae", **TINY)
    gen.fit(toy_train, epochs=1, quiet=True)
    assert gen.model_card["privacy"] == {"dp": False, "unit": "patient"}


def test_dp_needs_an_epoch_budget(toy_train):
    with pytest.raises(ValueError, match="epoch budget"):
        create_generator("flow", **TINY).fit(toy_train, DPConfig(epsilon=3.0), minutes=0.1, quiet=True)


def test_delta_above_one_over_ten_patients_is_refused(toy_train):
    with pytest.raises(PrivacySettingsError, match=r"delta 0.1 is above 1 / \(10 x 6 training patients\)"):
        create_generator("flow", **TINY).fit(toy_train, DPConfig(epsilon=3.0, delta=0.1), epochs=1, quiet=True)


def test_secure_mode_without_its_rng_is_refused():
    with pytest.raises(PrivacySettingsError, match="torchcsprng"):
        open_account(DPConfig(epsilon=3.0, secure_mode=True), n_patients=10)


# --- the mechanism, on a model small enough to compute by hand ---------------------------------------------------
def _linear_session(n_patients=5, slices=3, batch_size=2, k=1, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(2, 1, bias=False)
    patient = np.repeat(np.arange(n_patients), slices)
    x = torch.randn(len(patient), 1, 1, 2) * 10  # large inputs: most per-patient gradients get clipped
    data = SliceTensors(x=x, cond=torch.zeros(len(patient), 4, 1, 2), vendor=torch.zeros(len(patient), dtype=torch.long),
                        patient=patient)

    def loss(batch, gen):
        return (net(batch.x.flatten(1)) - 1.0).pow(2).mean()

    objective = Objective("lin", [net], loss, lr=0.1)
    account = open_account(DPConfig(epsilon=5.0, max_grad_norm=1.0), n_patients)
    session = PrivateTraining([objective], data, TrainSettings(batch_size=batch_size), account, epochs=1, seed=seed,
                              slices_per_patient=k)
    return session, objective, net, data


@pytest.mark.parametrize("k", [1, 2])
def test_each_patient_is_clipped_once_then_summed_and_averaged(k):
    session, objective, net, data = _linear_session(k=k)
    optimizer = session.optimizers[0]
    optimizer.noise_multiplier = 0.0  # isolate clipping and averaging from the noise
    index = session.batches.slices_of([0, 3])
    expected = torch.zeros_like(net.weight)
    norms = []
    for p in range(2):
        rows = index[p * k:(p + 1) * k]
        net.zero_grad()
        with session.hooks_off():  # the reference is plain autograd, one patient at a time
            objective.loss(data.batch(rows, "cpu"), None).backward()
        g = net.weight.grad.clone()
        norms.append(g.norm().item())
        expected += g * min(1.0, 1.0 / (g.norm().item() + 1e-6))
    assert max(norms) > 1.0, "the test must exercise clipping"
    expected /= optimizer.expected_batch_size
    optimizer.zero_grad()
    session.private_step(objective, optimizer, data.batch(index, "cpu"), None)
    torch.testing.assert_close(net.weight.grad, expected, rtol=1e-5, atol=1e-7)
    session.close()


def test_an_empty_poisson_batch_still_adds_noise_and_counts():
    session, objective, net, data = _linear_session()
    before = net.weight.detach().clone()
    optimizer = session.optimizers[0]
    optimizer.zero_grad()
    assert session.private_step(objective, optimizer, data.batch(np.zeros(0, np.int64), "cpu"), None) is None
    assert net.weight.grad.abs().sum() > 0 and not torch.equal(net.weight.detach(), before)
    assert session.account.engine.accountant.history[-1][2] == 1 and session.steps_taken == 1
    session.close()


def test_dp_gan_privatises_only_real_data(toy_train, monkeypatch):
    import generators.dp.engine as engine
    rows = []
    original = engine.group_grad_samples

    def recording(params, k):
        rows.append(params[0].grad_sample.shape[0])
        original(params, k)

    real_sizes = []
    step = engine.PrivateTraining.private_step

    def recording_step(self, objective, optimizer, batch, gen):
        real_sizes.append(len(batch.x))
        return step(self, objective, optimizer, batch, gen)

    monkeypatch.setattr(engine, "group_grad_samples", recording)
    monkeypatch.setattr(engine.PrivateTraining, "private_step", recording_step)
    gen = create_generator("gan", **TINY)
    gen.fit(toy_train, DPConfig(epsilon=EPSILON), epochs=1, quiet=True)
    # One per-sample gradient per sampled patient's real slice: the fakes add no rows (their gradient is not noised).
    assert rows == [n for n in real_sizes if n > 0]
    d_objective, g_objective = gen._objectives()
    assert d_objective.private and d_objective.public_loss is not None and not g_objective.private
    # The generator's DP-time update reads no patient data: the same loss whatever the batch.
    data = generators.training.make_tensors(toy_train, lambda names: gen.vendor_indices(names))
    losses = []
    for idx in ([0, 1], [5, 9]):
        gen._public.gen.manual_seed(3)
        losses.append(g_objective.loss(data.batch(np.array(idx), "cpu"), torch.Generator().manual_seed(4)).item())
    assert losses[0] == losses[1]


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(generators.GENERATORS))
def test_dp_training_on_cuda(name, toy_train):
    gen = create_generator(name, **TINY, **STEPS.get(name, {}))
    log = gen.fit(toy_train, DPConfig(epsilon=EPSILON), epochs=EPOCHS, seed=0, device="cuda", quiet=True)
    ledger = gen.model_card["privacy"]
    assert ledger["dp"] is True and 0.95 * EPSILON <= ledger["epsilon"] <= EPSILON
    assert ledger["steps"] == log["steps"] > 0 and all(np.isfinite(v) for v in log["final_loss"].values())
    assert all(p.is_cuda and p.grad_sample is None for m in gen._networks().values() for p in m.parameters()
               if hasattr(p, "grad_sample"))
    images = gen.sample(toy_train.labels[:3], toy_train.vendors[:3], seed=1)
    assert images.shape == toy_train.labels[:3].shape and np.isfinite(images).all()
