"""TSTR / TRTR passes a perfect generator (unseen real patients) and fails the three classic faults."""
import numpy as np
import pytest

from auditors.base import AuditContext
from auditors.runner import run_auditors
from auditors.utility.segmentation_utility import SegmentationUtilityAuditor, low_data_subjects

# 144 steps per segmenter on 12 tiny patients (96 slices, batch 8).
OPTIONS = {"utility_epochs": 12}


def _context(heart_splits, synthetic, **options):
    return AuditContext(train=heart_splits["train"], holdout=heart_splits["holdout"], synthetic=synthetic,
                        test=heart_splits["test"], options={**OPTIONS, **options}, quiet=True)


@pytest.fixture(scope="module")
def tstr(heart_splits, make_faulty):
    """kind -> AuditResult with TRTR and TSTR only; the real-train segmenter is trained once."""
    shared, out = {}, {}
    for kind in ("good", "shuffled_labels", "mode_collapse", "noise"):
        ctx = _context(heart_splits, make_faulty(kind, heart_splits["synthetic"]), utility_experiments=[])
        ctx.cache.update(shared)
        out[kind] = SegmentationUtilityAuditor().run(ctx)
        shared.update({k: v for k, v in ctx.cache.items() if k.startswith("segmentation.")})
    return out


def test_tstr_ratio_passes_a_perfect_generator_and_fails_each_fault(tstr):
    good = tstr["good"].checks[0]
    assert good.name == "utility.tstr_dice_ratio" and good.passed, good
    for kind in ("shuffled_labels", "mode_collapse", "noise"):
        check = tstr[kind].checks[0]
        assert not check.passed, (kind, check.value)
        assert check.value < good.value
    # TRTR is the same segmenter in every run (shared), so the baseline does not move.
    trtr = {k: r.metrics["runs"]["TRTR (real train)"]["dice"]["mean"] for k, r in tstr.items()}
    assert len(set(trtr.values())) == 1 and trtr["good"] > 0.8


def test_metrics_name_the_test_split_and_the_budget(tstr):
    m = tstr["good"].metrics
    assert m["test_split"] == "test" and m["test_subjects"] == 6
    assert m["budget"]["steps_per_segmenter"] == 144 and m["budget"]["utility_epochs"] == 12
    assert set(m["runs"]) == {"TRTR (real train)", "TSTR (synthetic only)"}
    assert set(m["runs"]["TSTR (synthetic only)"]["by_vendor"]) == {"A", "B", "C"}
    assert m["runs"]["TSTR (synthetic only)"]["synthetic_subjects"] == 6
    assert "not run" in m["leave_one_vendor_out"] and "not run" in m["low_data"]


def test_without_a_test_split_the_holdout_is_used_and_said(heart_splits):
    ctx = _context(heart_splits, heart_splits["synthetic"], utility_experiments=[], utility_epochs=3)
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
def test_every_experiment_runs_and_reports(heart_splits):
    ctx = _context(heart_splits, heart_splits["synthetic"])
    result = SegmentationUtilityAuditor().run(ctx)
    m = result.metrics
    assert result.checks[0].passed
    assert set(m["leave_one_vendor_out"]) == {"A", "B", "C"}
    for vendor, entry in m["leave_one_vendor_out"].items():
        assert entry["synthetic_slices"] == int((heart_splits["synthetic"].vendors == vendor).sum())
        assert entry["gain"] == pytest.approx(entry["with_synthetic"] - entry["without_synthetic"])
        without = m["runs"][f"LOVO {vendor}: real without {vendor}"]
        assert without["real_subjects"] == 8 and set(without["by_vendor"]) == {vendor}
    assert m["low_data"]["real_subjects"] == 3
    assert m["budget"]["segmenters"] == 11
    assert m["real_plus_synthetic_gain"] == pytest.approx(
        m["runs"]["real + synthetic"]["dice"]["mean"] - m["runs"]["TRTR (real train)"]["dice"]["mean"])
    assert {f.name for f in result.figures} == {"utility_dice", "utility_lovo_dice"}
    assert np.isfinite(m["tstr_dice_ratio"])
