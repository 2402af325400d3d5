"""The release gate end to end on a tiny phantom: released, blocked, crashed; nothing exported unless released.

One generator is trained once per module (the passing release, ~25 s on 2 idle cores); the other cases load it
from the audit folder (`[generator] model`), so each costs an audit (~10 s), not a training run. The two cases
that repeat what tests/test_export.py checks at unit level (a crash during the export, the CLI table) are slow.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from cmri_release import export
from cmri_release.commands.release_cmd import demo_command, release_command
from cmri_release.export import verify_manifest
from cmri_release.io import read_cohort
from cmri_release.release import run_release
from cmri_release.spec import default_spec, load_spec, parse_spec
from gate_stand_in import only_the_stand_in

TINY = """
seed = 0
[data]
size = 32
[data.phantom]
subjects = 12
[generator]
{generator}
[synthesis]
subjects = 4
[audit]
groups = {groups}
utility_epochs = 1
[thresholds]
{thresholds}
[export]
out = "{out}"
formats = ["nifti", "dicom"]
"""
TRAIN = "epochs = 2"


def write_spec(folder: Path, out="release", generator=TRAIN, groups='["privacy", "fidelity", "utility"]',
               thresholds="") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.toml"
    path.write_text(TINY.format(out=out, generator=generator, groups=groups, thresholds=thresholds))
    return path


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# The tiny run's fidelity/utility thresholds relaxed to what a 2-epoch generator on 6 patients reaches (these tests
# are about the gate's mechanics, the demo about quality).
RELAXED = "\n".join(f'"{name}" = {value}' for name, value in {
    "fidelity.mask_dice_ratio": 0.0, "fidelity.segmenter_real_dice": 0.0, "fidelity.fd_excess_segmenter": 1e9,
    "fidelity.fd_excess_embedding": 1e9, "fidelity.intensity_w1_ratio": 1e9, "fidelity.precision_ratio": 0.0,
    "fidelity.coverage_ratio": 0.0, "fidelity.diversity_ratio": 0.0, "utility.tstr_dice_ratio": 0.0,
    "utility.mixed_dice_gain": -1.0, "utility.low_data_dice_gain": -1.0, "utility.lovo_dice_gain": -1.0}.items())


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A release that passes."""
    folder = tmp_path_factory.mktemp("pass")
    with only_the_stand_in():  # the gate's mechanics; real verdicts need cohorts these tests cannot afford
        spec = load_spec(write_spec(folder, groups='["privacy"]'))
        outcome = run_release(spec, quiet=True)
    return folder, spec, outcome


def test_a_passing_release_is_complete(released):
    folder, spec, outcome = released
    assert outcome.status == "released" and outcome.exit_code == 0, outcome.message
    out = folder / "release"
    assert outcome.release_dir == out and hidden(folder) == []
    assert sorted(p.name for p in out.iterdir()) == ["data", "datasheet.html", "dicom", "manifest.json"]
    assert verify_manifest(out) == []
    cohort = read_cohort(out / "data")
    assert len(cohort) == 4 and all(sid.startswith("syn-0-") for sid in cohort.ids)
    ds = pydicom.dcmread(next((out / "dicom").rglob("*.dcm")))
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID in cohort.ids
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verdict"] == "pass" and manifest["checks"] == outcome.checks
    assert {c["name"] for c in manifest["checks"]} == {"privacy.test_intensity_gap"}
    assert all(c["verdict"] == "pass" and c["lower"] is not None for c in manifest["checks"])
    assert manifest["privacy_ledger"]["unit"] == "patient"
    assert manifest["seeds"]["phantom"] == 0 and manifest["spec"]["thresholds"] == dict(spec.thresholds)
    # Real phantom patient ids never reach the public release.
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert b"ph0000-" not in blob
    audit = folder / "release.audit"
    assert {"audit.json", "audit.html", "junit.xml", "model"} <= {p.name for p in audit.iterdir()}
    assert set(outcome.stage_seconds) == {"data", "train", "synthesise", "stage data", "audit", "audit report",
                                          "export"}


@pytest.mark.cuda
def test_a_release_trained_and_audited_on_cuda(tmp_path):
    with only_the_stand_in():
        spec = load_spec(write_spec(tmp_path, generator='epochs = 2\ndevice = "cuda"', groups='["privacy"]'))
        outcome = run_release(spec, quiet=True)
    assert outcome.status == "released" and outcome.exit_code == 0, outcome.message
    assert verify_manifest(tmp_path / "release") == []
    audit = json.loads((tmp_path / "release.audit" / "audit.json").read_text())
    assert audit["verdict"] == "pass" and audit["errors"] == {}
    card = json.loads((tmp_path / "release.audit" / "model" / "model_card.json").read_text())
    assert card["training"]["device"] == "cuda" and card["network"]["parameters"] > 1_000_000  # the large preset


def test_a_threshold_no_cohort_meets_blocks(released, tmp_path):
    model = released[0] / "release.audit" / "model"
    with only_the_stand_in():  # a threshold below any possible gap: the check is shown outside it
        spec = load_spec(write_spec(tmp_path, generator=f'model = "{model}"', groups='["privacy"]',
                                    thresholds='"privacy.test_intensity_gap" = -1.0'))
        outcome = run_release(spec, quiet=True)
    assert outcome.status == "blocked" and outcome.exit_code == 1
    assert not (tmp_path / "release").exists() and hidden(tmp_path) == []
    failed = {c["name"] for c in outcome.failed_checks}
    assert failed == {"privacy.test_intensity_gap"}
    assert "privacy.test_intensity_gap fail: lower bound" in outcome.message and "outside <= -1" in outcome.message
    audit = json.loads((tmp_path / "release.audit" / "audit.json").read_text())
    assert audit["verdict"] == "fail"
    junit = ET.parse(tmp_path / "release.audit" / "junit.xml").getroot()
    failures = [tc.get("name") for tc in junit.iter("testcase") if tc.find("failure") is not None]
    assert any("privacy.test_intensity_gap" in name for name in failures)
    assert "model" not in {p.name for p in (tmp_path / "release.audit").iterdir()}  # loaded, not trained


@pytest.mark.slow
def test_a_crash_during_export_leaves_no_release(released, tmp_path, monkeypatch):
    model = released[0] / "release.audit" / "model"
    real = export.write_dicom_release

    def crash_midway(cohort, folder):
        real(type(cohort)(cohort.subjects[:1]), folder)  # some files are on disk when the crash comes
        raise OSError("injected: disk full")

    monkeypatch.setattr(export, "write_dicom_release", crash_midway)
    with only_the_stand_in():  # a release that passes its gate, so that the export is reached
        spec = load_spec(write_spec(tmp_path, generator=f'model = "{model}"', groups='["privacy"]'))
        outcome = run_release(spec, quiet=True)
    assert outcome.status == "error" and outcome.exit_code == 2 and outcome.failed_stage == "export"
    assert "injected: disk full" in outcome.message
    assert not (tmp_path / "release").exists() and hidden(tmp_path) == []
    assert (tmp_path / "release.audit" / "audit.json").exists()  # the audit is kept whatever happens next


def test_a_crash_in_an_early_stage_is_an_error(released, tmp_path, monkeypatch):
    import generators.synthesis

    model = released[0] / "release.audit" / "model"
    spec = load_spec(write_spec(tmp_path, generator=f'model = "{model}"', groups='["privacy"]'))
    monkeypatch.setattr(generators.synthesis, "synthesize", lambda *a, **k: 1 / 0)
    outcome = run_release(spec, quiet=True)
    assert outcome.status == "error" and outcome.failed_stage == "synthesise"
    assert outcome.message.startswith("unexpected ZeroDivisionError")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


@pytest.mark.slow
def test_cli_exit_codes_and_table(released, tmp_path):
    model = released[0] / "release.audit" / "model"
    spec_file = write_spec(tmp_path, generator=f'model = "{model}"', groups='["privacy"]',
                           thresholds='"privacy.near_copy_rate" = -0.5')
    result = CliRunner().invoke(release_command, [str(spec_file), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "BLOCKED: nothing exported" in result.stdout and "privacy.near_copy_rate" in result.stdout
    assert "FAIL" in result.stdout and "total" in result.stdout
    assert not (tmp_path / "release").exists()


def test_existing_release_folder_is_refused_before_any_work(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    (tmp_path / "release").mkdir()
    outcome = run_release(spec, quiet=True)
    assert outcome.status == "error" and "already exists" in outcome.message
    assert outcome.stage_seconds == {}


def test_bad_spec_exits_2_with_one_line(tmp_path):
    spec_file = write_spec(tmp_path, generator="epochz = 2")
    result = CliRunner().invoke(release_command, [str(spec_file)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "[generator] epochz: unknown key (did you mean 'epochs'?)" in result.stderr


def test_demo_writes_the_default_spec(tmp_path):
    target = tmp_path / "my.toml"
    result = CliRunner().invoke(demo_command, ["--write-spec", str(target)])
    assert result.exit_code == 0, result.output
    assert parse_spec(target.read_text(), base_dir=tmp_path) == default_spec(tmp_path)
    again = CliRunner().invoke(demo_command, ["--write-spec", str(target)])
    assert again.exit_code == 2 and "already exists" in again.stderr


def _report(checks, errors=None, verdict="pass"):
    from types import SimpleNamespace

    from auditors.base import Check

    return SimpleNamespace(checks=[Check(*c) for c in checks], errors=errors or {}, verdict=verdict)


@pytest.mark.parametrize("checks,errors,groups,passes,words", [
    ([("privacy.a", 0.01, 0.02, "<=", 0.005, 0.015), ("fidelity.b", 0.9, 0.8, ">=", 0.85, 0.95)], {},
     ("privacy", "fidelity"), True, ""),
    ([("privacy.a", 0.05, 0.02, "<=", 0.04, 0.06), ("fidelity.b", 0.9, 0.8, ">=", 0.85, 0.95)], {},
     ("privacy", "fidelity"), False, "privacy.a fail: lower bound 0.04 is outside <= 0.02"),
    ([("privacy.a", 0.01, 0.02, "<=", 0.005, 0.03)], {}, ("privacy",), False,
     "privacy.a inconclusive: interval [0.005, 0.03] straddles 0.02"),
    ([("privacy.a", None, 0.02, "<=")], {}, ("privacy",), False, "privacy.a fail: no value"),
    ([("privacy.a", 0.01, 0.02, "<=")], {}, ("privacy",), False, "privacy.a fail: no confidence interval"),
    ([("privacy.a", 0.01, 0.02, "<=", 0.005, 0.015)], {}, ("privacy", "utility"), False,
     "no check from group(s) utility"),
    ([("privacy.a", 0.01, 0.02, "<=", 0.005, 0.015)], {"mia": "boom"}, ("privacy",), False, "auditor error(s): mia"),
    ([], {}, ("privacy",), False, "no check from group(s) privacy"),
])
def test_the_gate_fails_closed(tmp_path, checks, errors, groups, passes, words):
    from dataclasses import replace

    from cmri_release.release import _gate

    spec = default_spec(tmp_path, known_checks={})
    spec = replace(spec, audit=replace(spec.audit, groups=groups))
    passed, why = _gate(_report(checks, errors), spec)
    assert passed is passes
    assert words in why


def test_blocked_summary_lists_each_failure_with_its_interval():
    from cmri_release.commands.release_cmd import format_outcome
    from cmri_release.release import ReleaseOutcome

    checks = [{"name": "privacy.mia_auc", "estimate": 0.71, "lower": 0.66, "upper": 0.76, "threshold": 0.6,
               "op": "<=", "verdict": "fail", "passed": False},
              {"name": "utility.tstr_dice_ratio", "estimate": 0.9, "lower": 0.85, "upper": 0.95, "threshold": 0.7,
               "op": ">=", "verdict": "pass", "passed": True}]
    outcome = ReleaseOutcome(status="blocked", checks=checks, stage_seconds={"data": 1.0, "audit": 2.5},
                             audit_dir=Path("x.audit"),
                             message="privacy.mia_auc fail: lower bound 0.66 is outside <= 0.6\n"
                                     "fidelity.fd_excess_segmenter inconclusive: the cohort cannot tell; would likely "
                                     "fail with about 543 patients (now 100; the interval narrows)")
    text = format_outcome(outcome)
    assert "[0.66, 0.76]" in text and "FAIL" in text and "pass" in text
    assert "total               3.5" in text
    assert "BLOCKED: nothing exported (audit: x.audit)" in text
    assert "  - privacy.mia_auc fail: lower bound 0.66 is outside <= 0.6" in text
    # a reason that holds "; " stays one line (it was cut at "(now 100")
    assert "  - fidelity.fd_excess_segmenter inconclusive: the cohort cannot tell; would likely fail with about 543 " \
           "patients (now 100; the interval narrows)" in text
    assert outcome.exit_code == 1 and len(text.splitlines()) < 40


def test_lira_references_trained_beside_the_generator_are_the_ones_the_attack_trains(tmp_path, monkeypatch):
    """With two CPU threads the release trains the calibrated attack's reference generators beside the generator
    (one core each); the attack then takes them from the audit's cache instead of training its own, and its figures
    are those of a release on one thread, where the attack trains them itself after the generator."""
    import torch

    from auditors.base import AuditContext

    asked = []
    original = AuditContext.map_jobs

    def recording(self, fn, jobs, **kwargs):
        asked.append(kwargs.get("desc"))
        return original(self, fn, jobs, **kwargs)

    monkeypatch.setattr(AuditContext, "map_jobs", recording)
    docs = {}
    previous = torch.get_num_threads()
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            asked.clear()
            spec = load_spec(write_spec(tmp_path / str(threads), out=str(tmp_path / str(threads) / "release"),
                                        groups='["privacy"]'))
            outcome = run_release(spec)
            assert outcome.audit_dir is not None, outcome.message
            docs[threads] = json.loads((outcome.audit_dir / "audit.json").read_text())
            assert ("LiRA references" in asked) == (threads == 1)  # trained ahead on two threads, by the attack on one
    finally:
        torch.set_num_threads(previous)
    mia = {t: d["metrics"]["membership_inference"] for t, d in docs.items()}
    assert "lira (mean)" in mia[2]["candidate_auc_in_sample"]  # the calibrated attack ran with the references
    assert mia[2] == mia[1]
    assert [c for c in docs[2]["checks"] if c["name"].startswith("privacy.mia")] == \
        [c for c in docs[1]["checks"] if c["name"].startswith("privacy.mia")]
