"""fidelity.vendor_share_ratio: every real vendor keeps its share of synthetic patients (patients, not slices)."""
import math

import numpy as np
import pytest
from scipy.stats.contingency import relative_risk

from auditors.base import AuditContext, CohortSizes, Verdict
from auditors.fidelity.vendor_mix import CHECK, VendorMixAuditor, plan_figures, share_ratio
from cmri_release.core.sliceset import SliceSet


def _cohort(prefix: str, vendors: dict[str, int], slices: int = 2) -> SliceSet:
    ids, vs = [], []
    for vendor, n in vendors.items():
        for i in range(n):
            ids += [f"{prefix}-{vendor}-{i}"] * slices
            vs += [vendor] * slices
    n = len(ids)
    return SliceSet(images=np.zeros((n, 8, 8)), labels=np.zeros((n, 8, 8), np.uint8), subject_ids=ids, vendors=vs,
                    phases=["ED"] * n, slice_pos=np.zeros(n), slice_index=np.zeros(n), has_label=np.zeros(n, bool),
                    spacing_mm=1.0)


def _run(train, holdout, synthetic, **thresholds):
    ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, quiet=True, thresholds=thresholds)
    return VendorMixAuditor().run(ctx).checks[0]


def test_share_ratio_is_scipys_katz_interval_and_bounds_a_missing_vendor():
    est, lo, hi = share_ratio(33, 100, 67, 200)
    ref = relative_risk(33, 100, 67, 200).confidence_interval(0.90)
    assert (est, lo, hi) == pytest.approx((33 / 100 / (67 / 200), ref.low, ref.high))
    est, lo, hi = share_ratio(3, 100, 67, 200)  # under 5 a side: exact and wider than Katz
    katz = relative_risk(3, 100, 67, 200).confidence_interval(0.90)
    assert lo < katz.low and hi > katz.high
    est, lo, hi = share_ratio(0, 100, 67, 200)
    assert est == 0 and lo == 0 and 0 < hi < 0.5  # 0 of 100 against a third: shown starved
    assert share_ratio(0, 3, 2, 6)[2] > 1  # 0 of 3 proves nothing


def test_bounds_cover_the_true_ratio_in_simulation():
    rng = np.random.default_rng(0)
    for p_syn, p_real, n_syn, n_real in ((0.33, 0.33, 100, 200), (0.1, 0.3, 60, 120), (0.02, 0.2, 100, 200),
                                         (0.5, 0.5, 4, 10), (0.3, 0.3, 10, 20)):
        truth = p_syn / p_real
        draws = [share_ratio(rng.binomial(n_syn, p_syn), n_syn, rng.binomial(n_real, p_real), n_real)
                 for _ in range(2000)]
        lower_ok = np.mean([d[1] <= truth for d in draws])
        upper_ok = np.mean([d[2] >= truth for d in draws])
        assert lower_ok >= 0.93 and upper_ok >= 0.93, (p_syn, p_real, lower_ok, upper_ok)


def test_a_cohort_without_one_vendor_fails_and_the_same_mix_passes():
    train, holdout = _cohort("t", {"A": 34, "B": 33, "C": 33}), _cohort("h", {"A": 33, "B": 34, "C": 33})
    same = _run(train, holdout, _cohort("s", {"A": 100, "B": 100, "C": 100}))
    assert same.verdict == Verdict.PASS and same.estimate == pytest.approx(1.0, abs=0.02)
    missing = _run(train, holdout, _cohort("s", {"A": 150, "B": 150}))
    assert missing.verdict == Verdict.FAIL and missing.estimate == 0 and "worst vendor C" in missing.details
    starved = _run(train, holdout, _cohort("s", {"A": 145, "B": 145, "C": 10}))
    assert starved.verdict == Verdict.FAIL and starved.upper < 0.25
    thinner = _run(train, holdout, _cohort("s", {"A": 120, "B": 120, "C": 60}))  # C at 0.6 of its share
    assert thinner.verdict == Verdict.PASS
    allowed = _run(train, holdout, _cohort("s", {"A": 150, "B": 150}), **{CHECK: 0.0})
    assert allowed.verdict == Verdict.PASS  # a release scoped to two vendors on purpose


def test_a_tiny_cohort_is_inconclusive_and_says_what_would_decide():
    train, holdout = _cohort("t", {"A": 3, "B": 3}), _cohort("h", {"A": 2, "B": 2})
    check = _run(train, holdout, _cohort("s", {"A": 2, "B": 2}))
    assert check.verdict == Verdict.INCONCLUSIVE and "patients" in check.decide


def test_counts_patients_not_slices():
    train, holdout = _cohort("t", {"A": 50, "B": 50}), _cohort("h", {"A": 50, "B": 50})
    # vendor B's synthetic patients have 10x the slices: still half of the patients
    syn = SliceSet.concat([_cohort("s", {"A": 100}, slices=1), _cohort("s", {"B": 100}, slices=10)])
    assert _run(train, holdout, syn).estimate == pytest.approx(1.0)


def test_plan_agrees_with_simulation_and_grows_with_the_cohort():
    rng = np.random.default_rng(1)
    for n_syn, n_real in ((100, 200), (300, 200)):
        plan = plan_figures(n_syn, n_real, 0.5, share=0.2)
        sims = [share_ratio(rng.binomial(n_syn, 0.2), n_syn, rng.binomial(n_real, 0.2), n_real)[1] >= 0.5
                for _ in range(3000)]
        assert plan["honest_pass_probability"] == pytest.approx(np.mean(sims), abs=0.03)
    small, large = (VendorMixAuditor().plan(CohortSizes(n, n, n), {})[CHECK] for n in (30, 300))
    assert small["honest_pass_probability"] < large["honest_pass_probability"]
    assert math.isclose(plan_figures(10, 10, 0.0)["honest_pass_probability"], 1.0)


def test_vectorised_katz_bound_is_scipys():
    from auditors.fidelity.vendor_mix import katz_lower

    for a, n1, c, n2 in ((33, 100, 67, 200), (5, 40, 30, 90), (100, 300, 20, 200)):
        assert katz_lower(a, n1, c, n2) == pytest.approx(relative_risk(a, n1, c, n2).confidence_interval(0.90).low)
    assert katz_lower(0, 10, 3, 10) == 0 and katz_lower(4, 10, 30, 60) == 0
