"""`cmri-release audit` end to end on tiny phantom cohorts on disk: exit 0 / 1 / 2 and the three files."""
from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from cmri_release.cli import main
from cmri_release.core.cohort import Cohort
from cmri_release.commands.audit_cmd import audit_command
from cmri_release.io import write_cohort
from cmri_release.phantom import make_phantom

if "audit" not in main.commands:  # registered by the CLI group; added here so the test runs through its handler
    main.add_command(audit_command)

FAST = ["--only", "privacy", "--size", "32", "--quiet", "--option", "embedding_steps=10", "--option",
        "mia_bootstrap=200"]


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohorts")
    real = make_phantom(12, seed=21)
    train, holdout = Cohort(real.subjects[0::2]), Cohort(real.subjects[1::2])
    copies = Cohort([dataclasses.replace(s, id=f"syn-{s.id}") for s in train.subjects])
    paths = {}
    for name, cohort in (("train", train), ("holdout", holdout), ("copies", copies),
                         ("new", make_phantom(6, seed=22))):
        paths[name] = write_cohort(cohort, root / name)
    return paths


def run(args):
    return CliRunner().invoke(main, ["audit", *map(str, args)])


@pytest.mark.slow  # default run under 15 min on a slow 2-core machine (a faster sibling runs there)
def test_new_patients_at_six_a_side_are_inconclusive_with_exit_1_and_three_files(cohorts, tmp_path):
    # Honest patients, but 6 a side cannot show safety: nothing fails, the verdict is inconclusive (blocks, exit 1).
    out = tmp_path / "audit"
    result = run(["--train", cohorts["train"], "--holdout", cohorts["holdout"], "--synthetic", cohorts["new"],
                  "--out", out, *FAST])
    assert result.exit_code == 1, result.output
    assert "privacy.mia_auc" in result.output and "verdict: INCONCLUSIVE" in result.output
    doc = json.loads((out / "audit.json").read_text())
    assert doc["verdict"] == "inconclusive" and not any(c["verdict"] == "fail" for c in doc["checks"])
    assert doc["inputs"]["train"] == {"patients": 6, "slices": doc["inputs"]["train"]["slices"], "size": 32,
                                      "spacing_mm": 5.0, "vendors": doc["inputs"]["train"]["vendors"]}
    junit = ET.parse(out / "junit.xml").getroot()
    assert int(junit.get("tests")) == len(doc["checks"])
    assert int(junit.get("failures")) == sum(c["verdict"] != "pass" for c in doc["checks"])
    assert (out / "audit.html").read_text().startswith("<!DOCTYPE html>")


def test_copied_patients_fail_with_exit_1(cohorts, tmp_path):
    out = tmp_path / "audit"
    result = run(["--train", cohorts["train"], "--holdout", cohorts["holdout"], "--synthetic", cohorts["copies"],
                  "--out", out, *FAST])
    assert result.exit_code == 1, result.output
    assert "verdict: FAIL" in result.output
    failed = {c["name"] for c in json.loads((out / "audit.json").read_text())["checks"] if not c["passed"]}
    assert {"privacy.near_copy_rate", "privacy.mia_auc"} <= failed
    junit = ET.parse(out / "junit.xml").getroot()
    assert {tc.get("name") for tc in junit.iter("testcase") if tc.find("failure") is not None} == failed


def test_errors_exit_2_with_one_line(cohorts, tmp_path):
    base = ["--holdout", cohorts["holdout"], "--synthetic", cohorts["new"], "--out", tmp_path / "o", *FAST]
    missing = run(["--train", tmp_path / "nope", *base])
    assert missing.exit_code == 2 and "nope" in missing.output and "Traceback" not in missing.output
    thresholds = tmp_path / "t.toml"
    thresholds.write_text('"privacy.near_copy_rat" = 0.2\n')
    bad = run(["--train", cohorts["train"], "--thresholds", thresholds, *base])
    assert bad.exit_code == 2 and "did you mean 'privacy.near_copy_rate'" in bad.output
    group = run(["--train", cohorts["train"], *base, "--only", "beauty"])
    assert group.exit_code == 2 and "unknown group" in group.output
    overlap = run(["--train", cohorts["train"], "--holdout", cohorts["train"], "--synthetic", cohorts["new"],
                   "--out", tmp_path / "o2", *FAST])
    assert overlap.exit_code == 2 and "also in train" in overlap.output


@pytest.mark.parametrize("option,message", [
    ("mia_boostrap=5", "did you mean 'mia_bootstrap'"),
    ("mia_bootstrap=1.5", "expected an integer"),
    ("feature_spaces=['pixels','voxels']", "unknown 'voxels'"),
])
def test_an_unknown_or_mistyped_option_is_exit_2_before_any_work(cohorts, tmp_path, option, message):
    out = tmp_path / "audit"
    result = run(["--train", cohorts["train"], "--holdout", cohorts["holdout"], "--synthetic", cohorts["new"],
                  "--out", out, "--quiet", "--option", option])
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists()


def test_help_lists_the_declared_options():
    result = CliRunner().invoke(main, ["audit", "--help"])
    assert result.exit_code == 0
    for name in ("mia_bootstrap", "feature_spaces", "utility_epochs", "embedding_steps"):
        assert name in result.output
