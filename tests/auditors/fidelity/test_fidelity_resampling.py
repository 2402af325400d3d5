"""Patient-bootstrap intervals and planning figures: checked against direct computations and known truths."""
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from auditors.fidelity.diversity import _weighted_mean_distance, weighted_ratio
from auditors.fidelity.prdc import prdc
from auditors.fidelity.prdc_auditor import patient_parts
from auditors.fidelity.discriminator import patient_bootstrap_auc
from auditors.fidelity.resampling import (decide_text, patient_index, planning, ratio_of_means, slice_mean,
                                          slice_mean_ratio)
from auditors.segmentation.metrics import summarise
from sklearn.metrics import roc_auc_score


def test_patient_index_keeps_first_appearance_order():
    ids, rank = patient_index(["b", "b", "a", "c", "a"])
    assert list(ids) == ["b", "a", "c"] and list(rank) == [0, 0, 1, 2, 1]


def test_ratio_of_means_covers_the_true_ratio():
    """Per-patient values from two populations whose means differ by 1.5x: the bounds hold it ~90% of the time."""
    rng = np.random.default_rng(0)
    inside = 0
    for rep in range(60):
        syn, real = rng.gamma(4, 1.5 / 4, 80), rng.gamma(4, 1 / 4, 80)
        r = ratio_of_means(syn, real, 300, rng)
        assert r["lower"] <= r["estimate"] <= r["upper"]
        inside += r["lower"] <= 1.5 <= r["upper"]
    assert 0.8 <= inside / 60 <= 0.98  # two one-sided 95% bounds: 90% nominal


def test_slice_mean_equals_the_reported_structure_mean():
    rng = np.random.default_rng(1)
    dice = rng.uniform(0.5, 1, (40, 3))
    dice[rng.random((40, 3)) < 0.2] = np.nan  # undefined Dice (structure absent in both maps)
    ids = np.repeat(np.arange(8), 5)
    res = slice_mean(dice, ids, 50, rng)
    assert res["estimate"] == pytest.approx(summarise({k: dice[:, k] for k in range(3)})["mean"], rel=1e-12)
    ratio = slice_mean_ratio(dice, ids, dice, ids, 50, rng)
    assert ratio["estimate"] == pytest.approx(1.0) and ratio["lower"] < 1 < ratio["upper"]


def test_weighted_pairwise_distance_with_unit_weights_is_the_pdist_mean():
    x = np.random.default_rng(2).normal(size=(30, 4))
    from scipy.spatial.distance import squareform
    d = squareform(pdist(x))
    assert _weighted_mean_distance(d, np.ones((1, 30)))[0] == pytest.approx(pdist(x).mean(), rel=1e-12)
    collapsed = np.repeat(x[:1], 30, axis=0) + 1e-3 * np.random.default_rng(3).normal(size=(30, 4))
    ids = np.repeat(np.arange(6), 5)
    assert weighted_ratio(collapsed, ids, x, ids, 100, np.random.default_rng(4))["upper"] < 0.05


def test_patient_parts_reproduce_precision_and_coverage_of_prdc():
    rng = np.random.default_rng(5)
    train, fake = rng.normal(size=(60, 5)), rng.normal(0.3, 1, size=(40, 5))
    from auditors.fidelity.prdc import kth_neighbour_radii
    radii = kth_neighbour_radii(train, 5)
    parts = patient_parts(train, radii, fake, np.repeat(np.arange(8), 5))
    ref = prdc(train, fake, 5)
    assert parts["inside"].mean() == pytest.approx(ref["precision"])
    assert (parts["nearest"] < radii[:, None]).any(axis=1).mean() == pytest.approx(ref["coverage"])


def test_bootstrap_auc_with_unit_weights_is_sklearns_auc():
    rng = np.random.default_rng(6)
    y = np.repeat([0, 1], 50)
    scores = rng.normal(size=100) + 0.8 * y
    groups = np.repeat(np.arange(20), 5)
    reps = patient_bootstrap_auc(y, scores, groups, 200, rng)
    auc = roc_auc_score(y, scores)
    assert np.percentile(reps, 5) < auc < np.percentile(reps, 95)
    assert abs(np.mean(reps) - auc) < 0.03


def test_planning_and_decide():
    p = planning(0.1, 1.0, 1.6, "<=")
    assert 0.9 < p["honest_pass_probability"] < 1 and p["smallest_detectable"] == pytest.approx(1.6 + (1.645 + 0.842) * 0.1,
                                                                                                rel=1e-3)
    assert planning(0.1, 1.0, 0.5, ">=")["smallest_detectable"] < 0.5
    assert planning(float("nan"), 1.0, 1.6, "<=") == {}
    text = decide_text(1.3, 1.0, 1.9, 1.6, "<=", 20)
    assert "pass" in text and "patients" in text
    assert "fail" in decide_text(2.0, 1.5, 2.6, 1.6, "<=", 20)
    on_it = decide_text(0.0307, 0.0066, 0.0549, 0.03, "<=", 100)  # measured: 109062 patients a side
    assert "over 10000" in on_it and "0.0007" in on_it


def test_auditor_plan_scales_with_the_cohort():
    from auditors.base import CohortSizes
    from auditors.fidelity.discriminator import DiscriminatorAuditor
    from auditors.fidelity.texture import TextureAuditor

    small = TextureAuditor().plan(CohortSizes(train=20, holdout=10, synthetic=10), {})
    large = TextureAuditor().plan(CohortSizes(train=100, holdout=100, synthetic=100), {})
    for name in ("fidelity.texture_ratio", "fidelity.spectrum_ratio", "fidelity.structure_texture_ratio"):
        assert small[name]["honest_pass_probability"] < large[name]["honest_pass_probability"]
        assert small[name]["smallest_detectable"] > large[name]["smallest_detectable"] > 1.6
    disc = DiscriminatorAuditor().plan(CohortSizes(100, 100, 100), {"fidelity.discriminator_auc": 0.7})
    assert disc["fidelity.discriminator_auc"]["honest_pass_probability"] > 0.99


def test_bias_aware_bounds_contain_the_estimate_and_never_narrow_the_percentile_ones():
    from auditors.fidelity.resampling import bias_aware_bounds, bounds

    rng = np.random.default_rng(0)
    reps = rng.normal(4.0, 0.5, 2000)  # a bootstrap that runs low: the estimate is 6
    lo, hi = bias_aware_bounds(6.0, reps)
    plo, phi = bounds(reps)
    assert lo <= plo and hi >= phi and lo <= 6.0 <= hi
    assert hi == pytest.approx(2 * 6.0 - plo)  # the basic bound decides the side that a pass depends on
    unbiased = rng.normal(6.0, 0.5, 2000)
    assert bias_aware_bounds(6.0, unbiased) == pytest.approx(bounds(unbiased), abs=0.1)


def test_planned_figures_match_the_honest_draws_they_were_measured_on():
    """The plan's honest pass chance at 100/100 agrees with the recorded honest draws (at the default
    fidelity_networks, 3), threshold by threshold."""
    import json
    from pathlib import Path

    from auditors.fidelity.resampling import planned

    root = Path(__file__).resolve().parents[3] / "benchmarks"
    draws = [json.loads(line) for line in (root / "fd_excess_seeds_0_20_networks3.jsonl").read_text().splitlines()]
    for space in ("segmenter", "embedding"):
        uppers = np.array([d[space]["excess_bounds"][1] for d in draws if d["case"] == "honest"])
        for threshold in (0.02, 0.025, 0.03):
            p = planned(f"fidelity.fd_excess_{space}", 100, 100, 0.0, threshold, "<=")["honest_pass_probability"]
            observed = float((uppers <= threshold).mean())
            # 20 draws: a binomial standard error of at most 0.11; three of them is a generous band
            assert abs(p - observed) <= 3 * max(np.sqrt(p * (1 - p) / len(uppers)), 0.05), (space, threshold, p, observed)
    small = planned("fidelity.fd_excess_segmenter", 30, 30, 0.0, 0.03, "<=")
    large = planned("fidelity.fd_excess_segmenter", 300, 300, 0.0, 0.03, "<=")
    assert small["honest_pass_probability"] < large["honest_pass_probability"]
    assert small["smallest_detectable"] > large["smallest_detectable"] > 0.03


def test_every_fidelity_check_is_planned_and_an_honest_cohort_of_100_passes_the_far_thresholds():
    from auditors.base import AUDITORS, CohortSizes

    sizes = CohortSizes(100, 100, 100)
    for cls in AUDITORS.values():
        if cls.group != "fidelity":
            continue
        plans = cls().plan(sizes, {}) or {}
        for name in cls.default_thresholds:
            assert plans.get(name, {}).get("honest_pass_probability") is not None, name
    from auditors.fidelity.prdc_auditor import PRDCAuditor

    prdc = PRDCAuditor().plan(sizes, {})
    assert prdc["fidelity.precision_ratio"]["honest_pass_probability"] > 0.99  # measured: 20 of 20 honest draws
    strict = PRDCAuditor().plan(sizes, {"fidelity.precision_ratio": 1.0})["fidelity.precision_ratio"]
    assert strict["honest_pass_probability"] < 0.2  # a threshold at the honest value cannot be shown
