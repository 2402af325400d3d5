"""The planning figures of the MIA checks against a Monte Carlo of score distributions through the audit's own
selection and bound code (cross_fit, auc_parts / tpr_parts, worst_case, Check)."""
import numpy as np
import pytest
from scipy import stats

from auditors.base import Check, CohortSizes, worst_case
from auditors.privacy.mia import MembershipInference
from auditors.privacy.mia_plan import equal_sizes_needed, holdout_needed, plan_auc, plan_tpr
from auditors.privacy.mia_stats import Candidate, auc_parts, cross_fit, halves, tpr_parts

SIMS = 300


def simulate(n_train, n_holdout, shift, threshold, parts, fpr=0.05, seed=0):
    """Share of simulated audits whose check passes: members N(shift, 1), non-members N(0, 1)."""
    rng = np.random.default_rng(seed)
    passed = 0
    for i in range(SIMS):
        cand = Candidate("x", rng.normal(shift, 1, n_train), rng.standard_normal(n_holdout))
        kept = cross_fit([cand], halves(n_train, rng), halves(n_holdout, rng), keep=1, n_boot=200, seed=i)
        label, est, lower, upper = worst_case(parts(kept, fpr), "<=")
        passed += Check("privacy.x", est, threshold, "<=", lower=lower, upper=upper).passed
    return passed / SIMS


@pytest.mark.parametrize("sizes", [(100, 100), (160, 120)])
def test_auc_plan_agrees_with_simulation(sizes):
    n, m = sizes
    plan = plan_auc(n, m, 0.70)
    honest = simulate(n, m, 0.0, 0.70, lambda kept, fpr: auc_parts(kept))
    assert honest == pytest.approx(plan["honest_pass_probability"], abs=0.05)
    shift = np.sqrt(2) * stats.norm.ppf(plan["smallest_detectable"])  # binormal: AUC = Phi(d / sqrt 2)
    blocked = 1 - simulate(n, m, shift, 0.70, lambda kept, fpr: auc_parts(kept), seed=1)
    assert blocked == pytest.approx(0.8, abs=0.08)


def test_tpr_plan_agrees_with_simulation():
    plan = plan_tpr(100, 100, 0.25, 0.05)
    honest = simulate(100, 100, 0.0, 0.25, tpr_parts)
    assert honest == pytest.approx(plan["honest_pass_probability"], abs=0.03)
    shift = stats.norm.isf(0.05) - stats.norm.isf(plan["smallest_detectable"])
    blocked = 1 - simulate(100, 100, shift, 0.25, tpr_parts, seed=1)
    assert blocked == pytest.approx(0.8, abs=0.08)


def test_the_recommended_size_passes_an_honest_generator_nineteen_times_in_twenty():
    plans = MembershipInference().plan(CohortSizes(100, 100, 100), {})
    assert plans["privacy.mia_auc"]["honest_pass_probability"] >= 0.98
    assert plans["privacy.mia_tpr_at_low_fpr"]["honest_pass_probability"] >= 0.99
    assert plans["privacy.mia_auc"]["smallest_detectable"] < 0.67  # the issue measured 0.72 with the old rule
    assert plans["privacy.mia_tpr_at_low_fpr"]["smallest_detectable"] < 0.3


def test_small_cohorts_are_planned_honestly():
    # 3 training patients cannot show an AUC below 0.70 at any holdout
    tiny = plan_auc(21, 10, 0.70)
    assert tiny["honest_pass_probability"] < 0.5  # too small to show safety: inconclusive, not pass
    assert plan_tpr(100, 99, 0.25, 0.05)["honest_pass_probability"] == 0.0  # 5% FPR needs 100 non-members
    assert "not estimable" in plan_tpr(100, 20, 0.25, 0.05)["note"]
    needed = holdout_needed(100, 0.70)
    assert plan_auc(100, needed, 0.70)["honest_pass_probability"] >= 0.95
    assert plan_auc(100, needed - 1, 0.70)["honest_pass_probability"] < 0.95
    assert holdout_needed(3, 0.70) is None
    both = equal_sizes_needed(0.70)
    assert plan_auc(both, both, 0.70)["honest_pass_probability"] >= 0.95 > plan_auc(both - 1, both - 1, 0.70)[
        "honest_pass_probability"]
    assert equal_sizes_needed(0.5) is None  # no cohort shows an AUC below guessing
