"""The utility checks under the three verdicts: a perfect generator (unseen real patients) passes, the classic
faults fail, a test split too small to tell is inconclusive and says what would decide it."""
import numpy as np
import pytest

from auditors.base import AuditContext, CohortSizes, Verdict
from auditors.runner import run_auditors
from auditors.utility.planning import DEFAULT_THRESHOLDS
from auditors.utility.segmentation_utility import SegmentationUtilityAuditor, low_data_subjects
from tests.auditors.conftest import make_heart_slices

# 144 steps per segmenter on 12 tiny patients (96 slices, batch 8).
OPTIONS = {"utility_epochs": 12, "utility_bootstrap": 1000}


@pytest.fixture(scope="module")
def big_test():
    """30 unseen real patients (10 per vendor): enough for the paired intervals to tell."""
    return make_heart_slices(30, seed=2, prefix="tb")


def _context(heart_splits, synthetic, test=None, **options):
    return AuditContext(train=heart_splits["train"], holdout=heart_splits["holdout"], synthetic=synthetic,
                        test=heart_splits["test"] if test is None else test, options={**OPTIONS, **options},
                        quiet=True)


@pytest.fixture(scope="module")
def tstr(heart_splits, make_faulty, big_test):
    """kind -> AuditResult with TRTR, TSTR and (but for mode collapse) real + synthetic; the real-train segmenter is
    trained once."""
    shared, out = {}, {}
    for kind in ("good", "shuffled_labels", "mode_collapse", "noise"):
        ctx = _context(heart_splits, make_faulty(kind, heart_splits["synthetic"]), big_test,
                       utility_experiments=["none" if kind == "mode_collapse" else "mixed"])
        ctx.cache.update(shared)
        out[kind] = SegmentationUtilityAuditor().run(ctx)
        shared.update({k: v for k, v in ctx.cache.items() if k.startswith("segmentation.")})
    return out


def _check(result, name):
    return next(c for c in result.checks if c.name == name)


def test_tstr_ratio_passes_a_perfect_generator_and_fails_each_fault(tstr):
    good = _check(tstr["good"], "utility.tstr_dice_ratio")
    assert good.verdict is Verdict.PASS, good
    assert good.lower <= good.estimate <= good.upper and good.confidence == 0.95
    for kind in ("shuffled_labels", "mode_collapse", "noise"):
        check = _check(tstr[kind], "utility.tstr_dice_ratio")
        assert check.verdict is Verdict.FAIL, (kind, check.reason)
        assert check.upper < good.lower
    # TRTR is the same segmenter in every run (shared), so the baseline does not move.
    trtr = {k: r.metrics["runs"]["TRTR (real train)"]["dice"]["mean"] for k, r in tstr.items()}
    assert len(set(trtr.values())) == 1 and trtr["good"] > 0.8


def test_adding_a_faulty_cohort_to_real_data_is_caught(tstr):
    good = _check(tstr["good"], "utility.mixed_dice_gain")
    assert good.verdict is Verdict.PASS, good.reason
    for kind in ("shuffled_labels", "noise"):  # wrong masks or no anatomy in the images teach the segmenter wrong
        check = _check(tstr[kind], "utility.mixed_dice_gain")
        assert check.verdict is Verdict.FAIL and check.upper < 0, (kind, check.reason)


def test_paired_figures_per_structure_and_vendor(tstr):
    m = tstr["good"].metrics
    assert m["test_split"] == "test" and m["test_subjects"] == 30
    assert m["budget"]["steps_per_segmenter"] == 144 and m["budget"]["utility_epochs"] == 12
    assert set(m["runs"]) == {"TRTR (real train)", "TSTR (synthetic only)", "real + synthetic"}
    assert set(m["runs"]["TSTR (synthetic only)"]["by_vendor"]) == {"A", "B", "C"}
    rows = [r for r in m["paired"] if r["check"] == "utility.mixed_dice_gain"]
    assert {r["scope"] for r in rows} == {"all", "RV", "MYO", "LV", "vendor A", "vendor B", "vendor C"}
    overall = next(r for r in rows if r["scope"] == "all")
    runs = m["runs"]
    assert overall["estimate"] == pytest.approx(runs["real + synthetic"]["dice"]["mean"]
                                                - runs["TRTR (real train)"]["dice"]["mean"])
    assert all(r["lower"] <= r["estimate"] <= r["upper"] for r in rows)
    assert next(r for r in rows if r["scope"] == "vendor A")["patients"] == 10
    assert "not run" in m["leave_one_vendor_out"] and "not run" in m["low_data"]


def test_checks_carry_their_planning_figures(tstr):
    for check in tstr["good"].checks:
        assert 0 <= check.plan["honest_pass_probability"] <= 1 and check.plan["smallest_detectable"] > 0
        assert check.plan["test_patients"] == 30
    plan = SegmentationUtilityAuditor().plan(CohortSizes(100, 100, 100, 40), {})
    assert set(plan) == set(DEFAULT_THRESHOLDS)
    assert plan["utility.lovo_dice_gain"]["test_patients"] == 13


def test_a_test_split_too_small_to_tell_is_inconclusive_and_says_what_would_decide(heart_splits):
    # 3 test patients: a threshold inside the ratio's interval can be neither shown met nor shown missed.
    tiny = heart_splits["test"].for_subjects(heart_splits["test"].subjects[:3])
    ctx = _context(heart_splits, heart_splits["synthetic"], tiny, utility_experiments="none", utility_epochs=3)
    first = SegmentationUtilityAuditor().run(ctx).checks[0]
    assert first.upper - first.lower > 1e-3
    ctx.thresholds = {"utility.tstr_dice_ratio": (first.lower + first.upper) / 2}  # training is deterministic
    check = SegmentationUtilityAuditor().run(ctx).checks[0]
    assert (check.lower, check.upper) == pytest.approx((first.lower, first.upper))
    assert check.verdict is Verdict.INCONCLUSIVE, check.reason
    assert "real test patients would decide" in check.decide and check.decide in check.reason


def test_without_a_test_split_the_holdout_is_used_and_said(heart_splits):
    ctx = _context(heart_splits, heart_splits["synthetic"], utility_experiments="none", utility_epochs=3)
    ctx.test = None
    result = SegmentationUtilityAuditor().run(ctx)
    assert result.metrics["test_split"].startswith("holdout")
    assert result.metrics["test_subjects"] == len(heart_splits["holdout"].subjects)


def test_unknown_experiment_fails_closed(heart_splits):
    ctx = _context(heart_splits, heart_splits["synthetic"], utility_experiments="mixed,lovoo", utility_epochs=1)
    result = run_auditors(ctx, ["utility"], names=["segmentation_utility"])[0]
    assert "lovoo" in result.error and not result.checks[-1].passed


def test_low_data_subjects_are_a_stratified_fifth(heart_splits):
    train = heart_splits["train"]  # 12 patients, 4 per vendor
    few = low_data_subjects(train, 0.2, seed=0)
    assert len(few) == 3 and set(train.for_subjects(few).vendor_names) == {"A", "B", "C"}
    assert few == low_data_subjects(train, 0.2, seed=0)
    tiny = train.for_subjects(train.subjects[:2])  # one patient per vendor: no stratified cut exists
    assert len(low_data_subjects(tiny, 0.2, seed=0)) == 1


@pytest.mark.slow
def test_every_experiment_runs_and_reports(heart_splits, big_test):
    ctx = _context(heart_splits, heart_splits["synthetic"], big_test)
    result = SegmentationUtilityAuditor().run(ctx)
    m = result.metrics
    assert {c.name for c in result.checks} == set(DEFAULT_THRESHOLDS)
    assert _check(result, "utility.tstr_dice_ratio").verdict is Verdict.PASS
    lovo = _check(result, "utility.lovo_dice_gain")
    rows = [r for r in m["paired"] if r["check"] == "utility.lovo_dice_gain" and r["scope"] == "all"]
    assert {r["comparison"] for r in rows} == {"A", "B", "C"} and all(r["patients"] == 10 for r in rows)
    # Every vendor must pass: the check's safe-side bound is the worst vendor's.
    assert lovo.lower == pytest.approx(min(r["lower"] for r in rows))
    for vendor in "ABC":
        without = m["runs"][f"LOVO {vendor}: real without {vendor}"]
        assert without["real_subjects"] == 8 and set(without["by_vendor"]) == {vendor}
    assert m["runs"]["low data (20% real)"]["real_subjects"] == 3
    assert m["budget"]["segmenters"] == 11
    assert {f.name for f in result.figures} == {"utility_dice", "utility_gains"}
    assert np.isfinite(m["tstr_dice_ratio"])
