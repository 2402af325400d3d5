"""Offline LiRA: reference generators built like the audited one (registry + model card), trained on the other half
of the holdout for the same epochs, calibrate the white-box score. Toy generators with known ground truth: one
memorises its training slices (leaky), one keeps only the population mean (honest), one is leaky AND its raw score
is drowned by how typical a slice is (only calibration reveals it)."""
from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest

from auditors.base import AuditContext, Verdict
from auditors.privacy.mia import MembershipInference
from generators import base as generator_base
from generators.base import Generator

FITTED: list[tuple[str, list[str], int]] = []  # (toy name, subject ids it was fitted on, epochs)


class _Toy(Generator):
    name = "toy-memoriser"
    leak = 1.0  # weight of the distance to the nearest training slice in the score
    typicality = 0.0  # weight of the distance to the population mean (patient difficulty, not membership)

    def __init__(self, **settings):
        self.settings = settings
        self.images = None
        self.card = {}

    def fit(self, train, privacy=None, *, epochs=None, minutes=None, device="cpu", seed=0, quiet=False):
        self.images = train.images.reshape(len(train), -1).astype(np.float64)
        FITTED.append((self.name, list(train.subjects), epochs))
        self.card = {"generator": self.name, "settings": dict(self.settings),
                     "training": {"epochs": float(epochs), "budget": {"epochs": epochs, "minutes": None}},
                     "privacy": {"dp": False}}
        return {}

    def membership_scores(self, slices, seed):
        x = slices.images.reshape(len(slices), -1).astype(np.float64)
        nearest = np.sqrt(((x[:, None, :] - self.images[None]) ** 2).sum(-1)).min(axis=1)
        typical = np.sqrt(((x - x.mean(axis=0)) ** 2).sum(-1))  # the same for target and references
        return -self.leak * nearest - self.typicality * 25.0 * typical * (1 + np.arange(len(x)) % 3)

    def sample(self, *a, **k): ...
    def save(self, folder): ...
    @classmethod
    def load(cls, folder, device="cpu"): ...
    @property
    def model_card(self):
        return dict(self.card)


class _Honest(_Toy):
    name = "toy-mean"
    leak = 0.0
    typicality = 1.0


class _Drowned(_Toy):
    name = "toy-drowned"
    typicality = 1.0


@pytest.fixture
def registered(monkeypatch):
    for cls in (_Toy, _Honest, _Drowned):
        monkeypatch.setitem(generator_base.GENERATORS, cls.name, cls)
    FITTED.clear()


def _audit(blobs, cls, references=1):
    train, holdout = blobs(24, slices=2, seed=1, prefix="t"), blobs(24, slices=2, seed=2, prefix="h")
    gen = cls(width=3)
    gen.fit(train, epochs=7)
    ctx = AuditContext(train=train, holdout=holdout, synthetic=blobs(24, slices=2, seed=4, prefix="n"), generator=gen,
                       generator_factory=lambda name, settings: generator_base.create_generator(name, **settings),
                       model_card=gen.model_card, seed=0, quiet=True,
                       options={"feature_spaces": ["pixels"], "pixel_size": 16, "mia_reference_models": references})
    return MembershipInference().run(ctx), train, holdout


def test_references_are_trained_like_the_target_on_the_other_holdout_half(blobs, registered):
    result, train, holdout = _audit(blobs, _Toy, references=2)
    target, *refs = FITTED
    assert len(refs) == 4 and all(name == _Toy.name and epochs == 7 for name, _, epochs in refs)
    for _, subjects, _ in refs:
        assert set(subjects) <= set(holdout.subjects)  # never a training patient
    # two per half, trained side by side (in any order): two patient sets, disjoint, the holdout together
    trained_on = Counter(frozenset(subjects) for _, subjects, _ in refs)
    halves = list(trained_on)
    assert sorted(trained_on.values()) == [2, 2]
    assert len(halves) == 2 and not halves[0] & halves[1] and halves[0] | halves[1] == set(holdout.subjects)
    assert result.metrics["candidate_auc_in_sample"]["lira (mean)"] == 1.0
    assert {c.name: c for c in result.checks}["privacy.mia_auc"].verdict is Verdict.FAIL
    assert not any("LiRA" in n for n in result.metrics["notes"])


def test_an_honest_generator_is_not_accused_by_the_calibrated_attack(blobs, registered):
    result, _, _ = _audit(blobs, _Honest)
    aucs = result.metrics["candidate_auc_in_sample"]
    assert abs(aucs["lira (mean)"] - 0.5) < 0.2
    assert {c.name: c for c in result.checks}["privacy.mia_auc"].verdict is not Verdict.FAIL


def test_the_budget_can_be_set_when_the_card_has_none(blobs, registered):
    train, holdout = blobs(6, seed=1, prefix="t"), blobs(6, seed=2, prefix="h")
    gen = _Toy()
    gen.fit(train, epochs=3)
    gen.card["training"] = {}
    ctx = AuditContext(train=train, holdout=holdout, synthetic=blobs(6, seed=4, prefix="n"), generator=gen,
                       generator_factory=lambda name, settings: generator_base.create_generator(name, **settings),
                       model_card=gen.model_card, quiet=True, options={"feature_spaces": ["pixels"]})
    result = MembershipInference().run(ctx)
    assert any("no training budget" in n for n in result.metrics["notes"])
    ctx.options["mia_reference_epochs"] = 2.0
    FITTED.clear()
    MembershipInference().run(ctx)
    assert [e for _, _, e in FITTED] == [2, 2]


def test_calibration_reveals_a_leak_the_raw_score_hides(blobs, registered):
    result, _, _ = _audit(blobs, _Drowned)
    aucs = result.metrics["candidate_auc_in_sample"]
    assert aucs["white_box (mean)"] < 0.75 < 0.95 < aucs["lira (mean)"]
    assert result.metrics["gated_attacks"][0]["label"].startswith("lira")


def test_references_trained_side_by_side_are_the_references_trained_in_a_row():
    """Real generators (a tiny flow): two references fitted at once, one CPU core each, hold the very weights they
    get fitted one after the other, on one core or two (the weights' seeding is the job's own)."""
    import torch

    from cmri_release.core.parallel import map_jobs
    from cmri_release.phantom import make_phantom
    from cmri_release.preprocess import PreprocessConfig, cohort_to_slices
    from auditors.privacy.lira import fit_reference

    data = cohort_to_slices(make_phantom(4, seed=7), PreprocessConfig(size=16))
    halves = [data.for_subjects(data.subjects[:2]), data.for_subjects(data.subjects[2:])]
    fit = functools.partial(fit_reference, factory=lambda name, settings: generator_base.create_generator(
        name, **settings), name="flow", settings={"network": "tiny", "batch_size": 8, "steps": 2}, epochs=1,
        device="cpu", quiet=True)
    jobs = [(halves[0], 1000), (halves[1], 2000)]
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        together = map_jobs(fit, jobs, workers=2)
        torch.set_num_threads(1)
        in_a_row = map_jobs(fit, jobs, workers=1)
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(together, in_a_row):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    assert not torch.equal(*(m.state_dict()[next(iter(sa))] for m in together))  # two seeds, two models
