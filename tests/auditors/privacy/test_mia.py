"""The membership-inference auditor on patients with known ground truth: copies fail, new patients pass at a size
the plan recommends, small cohorts are inconclusive with a size that would decide, white-box scores are used."""
import numpy as np
import pytest

from auditors.base import AuditContext, Verdict
from auditors.runner import run_auditors
from auditors.privacy.dp_consistency import accounted_epsilon, dp_consistency_check, model_delta
from auditors.privacy.mia import MembershipInference
from generators.base import Generator

PIXELS_ONLY = {"feature_spaces": ["pixels"], "pixel_size": 16, "mia_bootstrap": 400}


def _ctx(train, holdout, synthetic, **kw):
    options = {**PIXELS_ONLY, **kw.pop("options", {})}
    return AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0, quiet=True, options=options, **kw)


def _checks(result):
    return {c.name: c for c in result.checks}


def test_copies_fail_with_the_attack_chosen_on_other_patients(blobs, copies):
    train, holdout = blobs(15, seed=1, prefix="t"), blobs(15, seed=2, prefix="h")
    result = MembershipInference().run(_ctx(train, holdout, copies(train, seed=3)))
    auc = _checks(result)["privacy.mia_auc"]
    assert auc.verdict is Verdict.FAIL and auc.lower > 0.7
    assert auc.plan["honest_pass_probability"] < 0.5  # 15 / 15 patients is too small to show safety
    assert result.metrics["gated_attacks"][0]["auc"] > 0.95
    candidates = result.metrics["candidate_auc_in_sample"]
    assert len(candidates) == 8 and {"gan_leaks/pixels (mean)", "gan_leaks/pixels (max)"} <= set(candidates)
    assert result.figures[0].public  # ROC curves show no patient
    # 15 holdout patients cannot observe a 5% FPR: the check stays in the gate, inconclusive (fail closed); the
    # leak is shown by the AUC check, and the rate is a rate
    tpr = _checks(result)["privacy.mia_tpr_at_low_fpr"]
    assert (tpr.lower, tpr.upper) == (0.0, 1.0) and 0.0 <= tpr.estimate <= 1.0 and tpr.verdict is Verdict.INCONCLUSIVE
    assert "100+" in tpr.decide and tpr.plan["honest_pass_probability"] == 0.0
    assert any("cannot be decided on this cohort" in n for n in result.metrics["notes"])


def test_new_patients_on_a_small_cohort_are_inconclusive_and_say_what_would_decide(blobs):
    train, holdout = blobs(8, seed=1, prefix="t"), blobs(8, seed=2, prefix="h")
    auc = _checks(MembershipInference().run(_ctx(train, holdout, blobs(8, seed=4, prefix="n"))))["privacy.mia_auc"]
    assert auc.verdict is Verdict.INCONCLUSIVE
    assert "would decide" in auc.decide and any(ch.isdigit() for ch in auc.decide)


def test_new_patients_pass_at_the_recommended_size(blobs):
    train, holdout = blobs(100, slices=2, seed=1, prefix="t"), blobs(100, slices=2, seed=2, prefix="h")
    result = MembershipInference().run(_ctx(train, holdout, blobs(100, slices=2, seed=4, prefix="n")))
    checks = _checks(result)
    assert set(checks) == {"privacy.mia_auc", "privacy.mia_tpr_at_low_fpr"}
    assert all(c.passed for c in checks.values()), [(c.name, c.reason) for c in checks.values()]
    tpr = checks["privacy.mia_tpr_at_low_fpr"]
    assert 0.0 <= tpr.lower <= tpr.estimate <= tpr.upper <= 1.0
    assert result.metrics["epsilon_lower_bound"] == 0.0
    assert result.metrics["largest_showable_epsilon"] > 2.0
    assert "the most this cohort can show" in tpr.details


def test_copies_of_forty_percent_of_the_patients_are_caught_at_the_recommended_size(blobs, copies):
    # 40% copies: true AUC 0.4 + 0.6 / 2 = 0.7, true TPR at 5% FPR 0.4 + 0.6 x 0.05 = 0.43. (20% copies, AUC 0.6 and
    # TPR 0.24, are below what these checks resolve at 100 / 100: the near-copy check is the one that catches them.)
    from cmri_release.core.sliceset import SliceSet

    train, holdout = blobs(100, slices=2, seed=1, prefix="t"), blobs(100, slices=2, seed=2, prefix="h")
    fresh = blobs(60, slices=2, seed=4, prefix="n")
    leaked = copies(train.for_subjects(train.subjects[:40]), seed=3)
    result = MembershipInference().run(_ctx(train, holdout, SliceSet.concat([fresh, leaked])))
    checks = _checks(result)
    assert not checks["privacy.mia_auc"].passed
    assert checks["privacy.mia_tpr_at_low_fpr"].verdict is Verdict.FAIL


def test_a_three_patient_holdout_is_inconclusive(blobs, copies):
    train, holdout = blobs(20, seed=1, prefix="t"), blobs(3, seed=2, prefix="h")
    for synthetic in (blobs(20, seed=4, prefix="n"), copies(train, seed=3)):
        result = MembershipInference().run(_ctx(train, holdout, synthetic))
        # both checks stay in the gate (the low-FPR one cannot be observed on 3 patients) and neither decides
        assert {c.name: c.verdict for c in result.checks} == {"privacy.mia_auc": Verdict.INCONCLUSIVE,
                                                              "privacy.mia_tpr_at_low_fpr": Verdict.INCONCLUSIVE}


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
        return {"generator": self.name, "privacy": {"dp": False}}


def test_white_box_scores_are_aggregated_per_patient(blobs):
    train, holdout = blobs(12, seed=1, prefix="t"), blobs(12, seed=2, prefix="h")
    ctx = _ctx(train, holdout, blobs(12, seed=4, prefix="n"), generator=_Oracle(train.subjects))
    result = MembershipInference().run(ctx)
    assert result.metrics["candidate_auc_in_sample"]["white_box (max)"] == 1.0
    assert result.metrics["gated_attacks"][0]["label"].startswith("white_box")
    assert not _checks(result)["privacy.mia_auc"].passed
    # an unregistered generator cannot be rebuilt for reference models: said, not hidden
    assert any("LiRA) not run" in n for n in result.metrics["notes"])


def test_a_broken_white_box_score_fails_closed(blobs, monkeypatch):
    from auditors import base

    monkeypatch.setattr(base, "AUDITORS", {"membership_inference": MembershipInference})
    train, holdout = blobs(6, seed=1, prefix="t"), blobs(6, seed=2, prefix="h")
    ctx = _ctx(train, holdout, blobs(6, seed=4, prefix="n"), generator=_Oracle(train.subjects, shape_ok=False))
    [result] = run_auditors(ctx, ["privacy"])
    assert "membership_scores returned shape" in result.error and not result.checks[-1].passed


def _eps(low, point, high, showable):
    return {"epsilon_lower_bound": low, "epsilon_point": point, "epsilon_upper_bound": high,
            "largest_showable_epsilon": showable}


def test_dp_consistency_has_three_verdicts():
    assert dp_consistency_check({"privacy": {"dp": False}}, _eps(3, 3, 3, 5), "x") is None
    card = {"privacy": {"dp": True, "epsilon": 1.0, "epsilon_prv": 0.9, "epsilon_rdp": 1.0, "delta": 1e-6}}
    assert accounted_epsilon(card) == 1.0 and model_delta(card) == 1e-6 and model_delta({}) == 1e-5
    ok = dp_consistency_check(card, _eps(0.0, 0.1, 0.6, 3.0), "a")
    assert ok.verdict is Verdict.PASS and ok.threshold == 1.0
    broken = dp_consistency_check(card, _eps(2.0, 3.0, 4.0, 3.0), "a")
    assert broken.verdict is Verdict.FAIL and "DP implementation is broken" in broken.details
    unsure = dp_consistency_check(card, _eps(0.0, 0.5, 1.7, 0.8), "a")
    assert unsure.verdict is Verdict.INCONCLUSIVE and "cannot show a violation" in unsure.details
    unaccounted = dp_consistency_check({"privacy": {"dp": True}}, _eps(0, 0, 0, 1), "x")
    assert not unaccounted.passed and "no accounted epsilon" in unaccounted.details


@pytest.mark.parametrize("claimed", [0.5, 1.0])
def test_an_attack_proving_more_than_the_ledger_fails_the_dp_check(blobs, copies, claimed):
    # 30 + 30 patients copied outright: the bound proves more than a claimed epsilon of 0.5 or 1 allows.
    train, holdout = blobs(30, slices=2, seed=1, prefix="t"), blobs(30, slices=2, seed=2, prefix="h")
    card = {"privacy": {"dp": True, "epsilon": claimed, "delta": 1e-5}}
    result = MembershipInference().run(_ctx(train, holdout, copies(train, seed=3), model_card=card))
    dp = _checks(result)["privacy.dp_consistency"]
    assert result.metrics["epsilon_lower_bound"] > claimed
    assert dp.verdict is Verdict.FAIL and "broken" in dp.details
