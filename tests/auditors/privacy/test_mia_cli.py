"""Membership inference through `cmri-release audit --only privacy`: a 3-patient holdout is inconclusive (exit 1),
a 1-patient holdout is refused (exit 2) with the size that would decide."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cmri_release.cli import main
from cmri_release.core.cohort import Cohort
from cmri_release.io import write_cohort
from cmri_release.phantom import make_phantom

FAST = ["--only", "privacy", "--size", "32", "--quiet", "--option", "feature_spaces=pixels", "--option",
        "mia_bootstrap=200"]


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohorts")
    real = make_phantom(16, seed=31)
    paths = {"train": write_cohort(Cohort(real.subjects[:12]), root / "train"),
             "holdout3": write_cohort(Cohort(real.subjects[12:15]), root / "holdout3"),
             "holdout1": write_cohort(Cohort(real.subjects[15:]), root / "holdout1"),
             "new": write_cohort(make_phantom(8, seed=32), root / "new")}
    return paths


def run(cohorts, holdout, out):
    return CliRunner().invoke(main, ["audit", "--train", str(cohorts["train"]), "--holdout", str(cohorts[holdout]),
                                     "--synthetic", str(cohorts["new"]), "--out", str(out), *FAST])


@pytest.fixture(scope="module")
def three(cohorts, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit3")
    return run(cohorts, "holdout3", out), json.loads((out / "audit.json").read_text())


def test_a_three_patient_holdout_blocks_with_exit_1_and_inconclusive_attacks(three):
    result, doc = three
    assert result.exit_code == 1, result.output
    mia = {c["name"]: c for c in doc["checks"] if c["name"].startswith("privacy.mia")}
    # a 5% FPR cannot be observed on 3 holdout patients: that check stays in the gate, inconclusive
    assert set(mia) == {"privacy.mia_auc", "privacy.mia_tpr_at_low_fpr"}
    assert mia["privacy.mia_tpr_at_low_fpr"]["verdict"] == "inconclusive"
    assert mia["privacy.mia_tpr_at_low_fpr"]["upper"] == 1.0
    assert mia["privacy.mia_auc"]["verdict"] == "inconclusive" and "would decide" in mia["privacy.mia_auc"]["decide"]
    assert set(mia["privacy.mia_auc"]["plan"]) >= {"honest_pass_probability", "smallest_detectable"}
    assert doc["verdict"] != "pass"


def test_a_three_patient_holdout_is_inconclusive_overall(three):
    assert three[1]["verdict"] == "inconclusive"


def test_a_one_patient_holdout_is_refused_with_the_size_that_would_decide(cohorts, tmp_path):
    result = run(cohorts, "holdout1", tmp_path / "audit")
    assert result.exit_code == 2
    assert "needs at least 2 to run" in result.output and "to decide" in result.output
    assert "Traceback" not in result.output
