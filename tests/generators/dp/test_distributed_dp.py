"""DP-SGD across 2 gloo processes against one process on the same patients: the same clipped, averaged gradient,
the noise added once, the same ledger; and the lock-step sampler's patient split."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from generators import DPConfig
from generators.dp import open_account
from generators.dp.engine import PrivateTraining
from generators.training import Objective, SliceTensors, TrainSettings

# slow: two torchrun processes; default run under 15 min on a slow 2-core machine (CI runs it)
pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Full backward hook", "ignore:Secure RNG turned off",
                                         "ignore:divide by zero:RuntimeWarning")]

N_PATIENTS, SLICES, BATCH = 8, 2, 4
STEP_PATIENTS = [0, 1, 2, 3, 5, 6]  # one step's global batch; rank r gets those with patient % 2 == r


def _session(width: int):
    """A conv + linear network on 4x4 inputs large enough to be clipped; the same weights in every process."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(48, width))
    patient = np.repeat(np.arange(N_PATIENTS), SLICES)
    x = torch.randn(len(patient), 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 10
    data = SliceTensors(x=x, cond=torch.zeros(len(patient), 4, 4, 4), vendor=torch.zeros(len(patient), dtype=torch.long),
                        patient=patient)

    def loss(batch, gen):
        return (net(batch.x) - 1.0).pow(2).mean()

    objective = Objective("net", [net], loss, lr=0.01)
    account = open_account(DPConfig(epsilon=3.0, max_grad_norm=1.0, accountant="rdp"), N_PATIENTS)
    session = PrivateTraining([objective], data, TrainSettings(batch_size=BATCH), account, epochs=2, seed=0)
    return session, objective, net, data


def _run(rank: int, world: int, init_file: str | None, out: str) -> None:
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        session, objective, net, data = _session(width=2000)  # wide: the noise's spread is measured precisely
        optimizer = session.optimizers[0]
        result = {"ebs": float(optimizer.expected_batch_size),
                  "sampler": [[int(i) for i in b] for b in session.batches.batch_sampler]}
        # Step 1 without noise: clipping and averaging alone, on this rank's share of fixed patients (each
        # patient's first slice, as the sampler would pick with k=1). A test device, so it leaves no history.
        sigma, optimizer.noise_multiplier = optimizer.noise_multiplier, 0.0
        mine = np.array([p * SLICES for p in STEP_PATIENTS if p % world == rank], dtype=np.int64)
        session.private_step(objective, optimizer, data.batch(mine, "cpu"), None)
        session.account.engine.accountant.history.pop()
        result["grads"] = [p.grad.detach().clone() for p in net.parameters()]
        result["weights"] = [p.detach().clone() for p in net.parameters()]
        # Step 2, the noise alone: nobody sampled on any rank.
        optimizer.noise_multiplier = sigma
        session.private_step(objective, optimizer, data.batch(np.zeros(0, np.int64), "cpu"), None)
        result["noise"] = net[2].weight.grad.detach().clone()
        result["noise_scale"] = sigma * 1.0 / (optimizer.expected_batch_size * world)
        result["ledger"] = {k: session.ledger()[k] for k in ("sample_rate", "noise_multiplier", "epsilon",
                                                             "history")}
        session.close()
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one = tmp_path_factory.mktemp("one")
    _run(0, 1, None, str(one))
    two = tmp_path_factory.mktemp("two")
    mp.spawn(_run, args=(2, str(two / "rendezvous"), str(two)), nprocs=2, join=True)
    return (torch.load(one / "rank0.pt", weights_only=False),
            [torch.load(two / f"rank{r}.pt", weights_only=False) for r in range(2)])


def test_two_processes_clip_per_patient_and_average_like_one(runs):
    single, ranks = runs
    assert ranks[0]["ebs"] == ranks[1]["ebs"] == single["ebs"] / 2  # Opacus' per-worker expected batch size
    assert any(g.abs().sum() > 0 for g in single["grads"])
    for r in ranks:
        for g2, g1 in zip(r["grads"], single["grads"]):
            torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-7)
        # Adam divides by |g|: entries whose gradient is ~1e-8 amplify float rounding, so 1% of one step (lr 0.01).
        for w2, w1 in zip(r["weights"], single["weights"]):
            torch.testing.assert_close(w2, w1, rtol=0, atol=1e-4)
    for w0, w1 in zip(ranks[0]["weights"], ranks[1]["weights"]):
        assert torch.equal(w0, w1)  # the ranks stay in step exactly


def test_noise_is_added_once_across_processes(runs):
    single, ranks = runs
    torch.testing.assert_close(ranks[0]["noise"], ranks[1]["noise"])  # all-reduced: one gradient everywhere
    sigma_c = single["noise_scale"]  # sigma * C / expected batch size: one process's noise on the averaged gradient
    for noise in (single["noise"], ranks[0]["noise"]):
        assert noise.std().item() == pytest.approx(sigma_c, rel=0.03)  # 96k entries; twice the noise is 41% more


def test_the_ledger_is_the_single_process_one(runs):
    single, ranks = runs
    for r in ranks:
        assert r["ledger"] == single["ledger"]  # the global sample rate, the same noise, steps and epsilon
    assert single["ledger"]["epsilon"] <= 3.0


def test_each_rank_samples_its_own_patients_in_lock_step(runs):
    single, ranks = runs
    steps = [r["sampler"] for r in ranks]
    assert len(steps[0]) == len(steps[1]) == len(single["sampler"])  # empty local batches are kept
    shares = [set(sum(s, [])) for s in steps]
    assert not shares[0] & shares[1]  # one epoch's split: no patient on two ranks
    assert shares[0] | shares[1] <= set(range(N_PATIENTS))
