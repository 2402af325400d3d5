"""cmri_release.audit: input checks, thresholds files, the report, fail-closed orchestration."""
import numpy as np
import pytest

from cmri_release.audit import check_thresholds, known_checks, load_thresholds, run_audit
from cmri_release.core.errors import InputError, SpecError
from cmri_release.core.sliceset import SliceSet

FAST = {"feature_spaces": ["pixels"], "pixel_size": 16, "mia_bootstrap": 200}


def patients(n, seed, prefix, size=16, slices=3):
    rng = np.random.default_rng(seed)
    images = rng.random((n * slices, size, size)).astype(np.float32)
    count = len(images)
    return SliceSet(images=images, labels=np.zeros(images.shape, np.uint8),
                    subject_ids=np.repeat([f"{prefix}{i}" for i in range(n)], slices), vendors=np.full(count, "A"),
                    phases=np.full(count, "ED"), slice_pos=np.zeros(count), slice_index=np.tile(np.arange(slices), n),
                    has_label=np.zeros(count, bool), spacing_mm=2.5)


def test_unknown_threshold_names_the_nearest_check():
    with pytest.raises(SpecError, match=r"unknown check 'privacy.mia_acu'; did you mean 'privacy.mia_auc'\?"):
        check_thresholds({"privacy.mia_acu": 0.7}, known_checks())
    with pytest.raises(SpecError, match="must be a number"):
        check_thresholds({"privacy.mia_auc": "high"}, known_checks())
    with pytest.raises(SpecError, match="must be a number"):
        check_thresholds({"privacy.mia_auc": True}, known_checks())


def test_thresholds_file_dotted_quoted_or_under_a_table(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('"privacy.mia_auc" = 0.7\nprivacy.near_copy_rate = 0.2\n')
    assert load_thresholds(path, known_checks()) == {"privacy.mia_auc": 0.7, "privacy.near_copy_rate": 0.2}
    path.write_text('[thresholds]\n"privacy.mia_auc" = 0.65\n')
    assert load_thresholds(path, known_checks()) == {"privacy.mia_auc": 0.65}
    path.write_text("privacy.mia_auc = [")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_thresholds(path, known_checks())
    with pytest.raises(InputError, match="not found"):
        load_thresholds(tmp_path / "missing.toml", known_checks())


def test_inputs_no_audit_can_trust_are_refused():
    train, holdout, synthetic = patients(4, 0, "t"), patients(4, 1, "h"), patients(4, 2, "s")
    with pytest.raises(InputError, match="holdout: 1 patient\\(s\\) also in train"):
        run_audit(train, SliceSet.concat([holdout, train.for_subjects(["t0"])]), synthetic, groups=["privacy"])
    with pytest.raises(InputError, match="different sizes"):
        run_audit(train, holdout, patients(4, 2, "s", size=8), groups=["privacy"])
    with pytest.raises(InputError, match="at least 2"):
        run_audit(train, holdout.for_subjects(["h0"]), synthetic, groups=["privacy"])
    with pytest.raises(SpecError, match="audit group"):
        run_audit(train, holdout, synthetic, groups=["privacy", "beauty"])


def test_run_audit_reports_checks_timings_and_feature_spaces():
    train, holdout = patients(8, 0, "t"), patients(8, 1, "h")
    report = run_audit(train, holdout, patients(8, 2, "s"), groups=["privacy"], options=FAST, quiet=True,
                       thresholds={"privacy.mia_auc": 0.7})
    names = {c.name for c in report.checks}
    # privacy.mia_tpr_at_low_fpr cannot pass on 8 holdout patients (a 5% FPR needs 100) but stays in the gate
    assert {"privacy.near_copy_rate", "privacy.closer_to_train_share", "privacy.mia_auc",
            "privacy.mia_tpr_at_low_fpr"} <= names
    # Honest patients at 8 a side: nothing is shown wrong, and too little is shown right to pass.
    assert report.verdict in ("pass", "inconclusive") and report.errors == {}
    assert not any(c.verdict == "fail" for c in report.checks)
    assert {c.name: c.threshold for c in report.checks}["privacy.mia_auc"] == 0.7
    assert set(report.timings) == {"nn_memorisation", "membership_inference", "real_copies", "total"}
    assert report.feature_spaces["pixels"]["dim"] == 256 and report.inputs["synthetic"]["patients"] == 8
