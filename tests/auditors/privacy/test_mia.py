import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from auditors.base import AuditContext
from auditors.runner import run_auditors
from auditors.privacy.dp_consistency import accounted_epsilon, dp_consistency_check, model_delta
from auditors.privacy.mia import (AttackSummary, MembershipInference, bootstrap_auc, clopper_pearson,
                                  epsilon_lower_bound, low_fpr_target, operating_point, rank_auc)
from generators.base import Generator

PIXELS_ONLY = {"feature_spaces": ["pixels"], "pixel_size": 16, "mia_bootstrap": 400}


def test_rank_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m, n = rng.integers(0, 5, 13).astype(float), rng.integers(0, 6, 9).astype(float)  # many ties
        y = np.r_[np.ones(13), np.zeros(9)]
        assert rank_auc(m, n) == pytest.approx(roc_auc_score(y, np.r_[m, n]))
    batch_m, batch_n = rng.standard_normal((4, 13)), rng.standard_normal((4, 9))
    expected = [roc_auc_score(np.r_[np.ones(13), np.zeros(9)], np.r_[a, b]) for a, b in zip(batch_m, batch_n)]
    np.testing.assert_allclose(rank_auc(batch_m, batch_n), expected)


def test_bootstrap_auc_is_seeded_and_centred():
    rng = np.random.default_rng(1)
    m, n = rng.normal(0.5, 1, 40), rng.normal(0, 1, 40)
    a, b = bootstrap_auc(m, n, 500, seed=7), bootstrap_auc(m, n, 500, seed=7)
    np.testing.assert_array_equal(a, b)
    assert abs(a.mean() - roc_auc_score(np.r_[np.ones(40), np.zeros(40)], np.r_[m, n])) < 0.02


def test_clopper_pearson_by_hand():
    # k = 0 and k = n have closed forms: upper 1 - alpha^(1/n), lower alpha^(1/n).
    assert clopper_pearson(0, 10, 0.05) == (0.0, pytest.approx(1 - 0.05 ** 0.1))
    assert clopper_pearson(10, 10, 0.05) == (pytest.approx(0.05 ** 0.1), 1.0)
    low, high = clopper_pearson(3, 10, 0.025)
    ci = stats.binomtest(3, 10).proportion_ci(confidence_level=0.95, method="exact")
    assert (low, high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_epsilon_lower_bound_by_hand():
    # A perfect attack on 1000 members and 1000 non-members, each bound at 5% (alpha = 0.1 split in two):
    # TPR >= 0.05^(1/1000), FPR <= 1 - 0.05^(1/1000), eps >= ln((TPR_low - delta) / FPR_high) = 5.81.
    t = 0.05 ** (1 / 1000)
    expected = math.log((1 - 1e-5 - (1 - t)) / (1 - t))
    assert epsilon_lower_bound(1000, 1000, 0, 1000, 1e-5, 0.1) == pytest.approx(expected)
    assert expected == pytest.approx(5.81, abs=0.01)
    # The other inequality (FNR + e^eps FPR >= 1 - delta) rules for an attack that misses no member but flags half
    # the non-members: eps >= ln((1 - delta - FPR_high) / FNR_high).
    fpr_high = stats.beta.ppf(0.95, 501, 500)
    assert epsilon_lower_bound(1000, 1000, 500, 1000, 1e-5, 0.1) == pytest.approx(
        math.log((1 - 1e-5 - fpr_high) / (1 - t)))
    assert epsilon_lower_bound(5, 10, 5, 10, 1e-5, 0.05) == 0.0  # guessing proves nothing


def test_operating_point_and_low_fpr_target():
    members, nonmembers = np.array([5.0, 4.0, 3.0, 0.5]), np.array([4.5, 2.0, 1.0, 0.0])
    assert operating_point(members, nonmembers, 0) == (4.5, 1, 0)
    assert operating_point(members, nonmembers, 1) == (2.0, 3, 1)
    assert low_fpr_target(99) == 0.05 and low_fpr_target(100) == 0.01


def test_attack_summary_on_separated_and_identical_scores():
    perfect = AttackSummary("a", "pixels", np.arange(20) + 100.0, np.arange(20.0), 0.05, 1e-5, 300, 0).evaluate()
    assert perfect.metrics["auc"] == 1.0 and perfect.metrics["auc_lower_bound"] == 1.0
    # 20 non-members at the 5% target: the threshold sits below the largest, which is the one false positive.
    assert perfect.metrics["tpr_at_low_fpr"] == 1.0 and perfect.metrics["fpr_at_low_fpr"] == 0.05
    rng = np.random.default_rng(2)
    same = AttackSummary("a", "pixels", rng.standard_normal(30), rng.standard_normal(30), 0.05, 1e-5, 300, 0).evaluate()
    assert same.metrics["auc_lower_bound"] < 0.5 < same.metrics["auc_ci95"][1]
    assert same.metrics["epsilon_lower_bound"] == 0.0
    with pytest.raises(ValueError, match="finite"):
        AttackSummary("a", None, np.array([np.nan]), np.array([0.0]), 0.05, 1e-5, 10, 0).evaluate()


def _ctx(train, holdout, synthetic, **kw):
    options = {**PIXELS_ONLY, **kw.pop("options", {})}
    return AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0, quiet=True, options=options, **kw)


def test_copies_are_detected_by_every_black_box_attack(blobs, copies):
    train, holdout = blobs(15, seed=1, prefix="t"), blobs(15, seed=2, prefix="h")
    result = MembershipInference().run(_ctx(train, holdout, copies(train, seed=3)))
    checks = {c.name: c for c in result.checks}
    assert not checks["privacy.mia_auc"].passed
    attacks = result.metrics["attacks"]
    assert set(attacks) == {f"{a}/pixels" for a in ("gan_leaks", "gan_leaks_calibrated", "monte_carlo", "domias")}
    for name in ("gan_leaks/pixels", "gan_leaks_calibrated/pixels", "monte_carlo/pixels"):
        assert attacks[name]["auc"] > 0.95, name
    assert result.figures[0].public  # ROC curves show no patient


def test_new_patients_pass(blobs):
    train, holdout = blobs(15, seed=1, prefix="t"), blobs(15, seed=2, prefix="h")
    result = MembershipInference().run(_ctx(train, holdout, blobs(15, seed=4, prefix="n")))
    assert all(c.passed for c in result.checks), [(c.name, c.value) for c in result.checks]
    assert result.metrics["epsilon_lower_bound"] == 0.0


class _Oracle(Generator):
    """A fake white-box generator that 'remembers' the training ids (tests the plumbing, not a model)."""

    name = "oracle-test"

    def __init__(self, members, shape_ok=True):
        self.members, self.shape_ok = set(members), shape_ok

    def membership_scores(self, slices, seed):
        scores = np.isin(slices.subject_ids, list(self.members)).astype(float)
        return scores if self.shape_ok else scores[:-1]

    def fit(self, *a, **k): ...
    def sample(self, *a, **k): ...
    def save(self, folder): ...
    @classmethod
    def load(cls, folder, device="cpu"): ...
    @property
    def model_card(self):
        return {"privacy": {"dp": False}}


def test_white_box_scores_are_aggregated_per_patient(blobs):
    train, holdout = blobs(12, seed=1, prefix="t"), blobs(12, seed=2, prefix="h")
    ctx = _ctx(train, holdout, blobs(12, seed=4, prefix="n"), generator=_Oracle(train.subjects))
    result = MembershipInference().run(ctx)
    white = result.metrics["attacks"]["white_box"]
    assert white["auc"] == 1.0 and white["members"] == 12 and white["nonmembers"] == 12
    assert result.metrics["bonferroni_attacks"] == 5
    assert not {c.name: c for c in result.checks}["privacy.mia_auc"].passed


def test_a_broken_white_box_score_fails_closed(blobs, monkeypatch):
    from auditors import base

    monkeypatch.setattr(base, "AUDITORS", {"membership_inference": MembershipInference})
    train, holdout = blobs(6, seed=1, prefix="t"), blobs(6, seed=2, prefix="h")
    ctx = _ctx(train, holdout, blobs(6, seed=4, prefix="n"), generator=_Oracle(train.subjects, shape_ok=False))
    [result] = run_auditors(ctx, ["privacy"])
    assert "membership_scores returned shape" in result.error and not result.checks[-1].passed


def test_dp_consistency_check():
    assert dp_consistency_check({"privacy": {"dp": False}}, 3.0, "x") is None
    assert dp_consistency_check(None, 3.0, "x") is None
    card = {"privacy": {"dp": True, "epsilon": 1.0, "epsilon_prv": 0.9, "epsilon_rdp": 1.0, "delta": 1e-6}}
    assert accounted_epsilon(card) == 1.0 and model_delta(card) == 1e-6 and model_delta({}) == 1e-5
    ok = dp_consistency_check(card, 0.4, "gan_leaks/pixels")
    assert ok.passed and ok.threshold == 1.0
    broken = dp_consistency_check(card, 2.0, "gan_leaks/pixels")
    assert not broken.passed and "DP implementation is broken" in broken.details
    unaccounted = dp_consistency_check({"privacy": {"dp": True}}, 0.0, "x")
    assert not unaccounted.passed and "no accounted epsilon" in unaccounted.details


def test_an_attack_proving_more_than_the_ledger_fails_the_dp_check(blobs, copies):
    # 60 + 60 patients copied outright: the Clopper-Pearson bound proves eps > 1, which no eps = 1 model allows.
    train, holdout = blobs(60, slices=2, seed=1, prefix="t"), blobs(60, slices=2, seed=2, prefix="h")
    card = {"privacy": {"dp": True, "epsilon": 1.0, "delta": 1e-5}}
    result = MembershipInference().run(_ctx(train, holdout, copies(train, seed=3), model_card=card))
    dp = {c.name: c for c in result.checks}["privacy.dp_consistency"]
    assert result.metrics["epsilon_lower_bound"] > 1.0
    assert not dp.passed and "broken" in dp.details
