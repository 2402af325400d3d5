"""What is released is what was audited, and `cmri-release verify` reproduces it from the release's bytes.

The release path runs with one injected privacy auditor whose check carries a bootstrap interval (the registry
is swapped for the module), so these tests do not depend on the real auditors' figures. One generator is trained
once per module (1 epoch on a 12-patient phantom); the other releases load it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from auditors import base
from auditors.base import AuditContext, Auditor, AuditResult
from cmri_release.cli import main
from cmri_release.export import MANIFEST, file_entries, verify_manifest
from cmri_release.io import read_cohort, write_cohort
from cmri_release.phantom import make_phantom
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices, slices_to_cohort
from cmri_release.release import run_release
from cmri_release.spec import load_spec
from cmri_release.verify import (TOLERANCE_FLOOR, compare_checks, read_released, slices_fingerprint,
                                 spec_differences, tolerance_for)

from gate_stand_in import CHECK, IntensityGap  # noqa: E402 - the test-only auditor


@pytest.fixture(autouse=True)
def only_the_test_auditor(monkeypatch):
    monkeypatch.setattr(base, "AUDITORS", {IntensityGap.name: IntensityGap})


SPEC = """
seed = 0
[data]
size = 32
{data}
[generator]
{generator}
[synthesis]
subjects = 4
[audit]
groups = ["privacy"]
utility_epochs = 1
[thresholds]
{thresholds}
[export]
out = "{out}"
formats = ["nifti", "dicom"]
"""
PHANTOM = "[data.phantom]\nsubjects = 12"


def write_spec(folder: Path, generator="epochs = 1", data=PHANTOM, thresholds="", out="release") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.toml"
    path.write_text(SPEC.format(out=out, generator=generator, data=data, thresholds=thresholds))
    return path


def verify(*args):
    return CliRunner().invoke(main, ["verify", *map(str, args), "--quiet"])


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A passing release that trained its own model (kept beside the audit)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(base, "AUDITORS", {IntensityGap.name: IntensityGap})
    try:
        folder = tmp_path_factory.mktemp("rel")
        spec_file = write_spec(folder)
        outcome = run_release(load_spec(spec_file), quiet=True)
    finally:
        mp.undo()
    assert outcome.status == "released", outcome.message
    return folder, spec_file, outcome


def test_the_audit_saw_the_released_files(released):
    folder, _, outcome = released
    manifest = json.loads((folder / "release" / MANIFEST).read_text())
    record = manifest["audit"]
    assert record["audited"] == "data/" and record["groups"] == ["privacy"] and record["seed"] == 0
    # The synthetic slices the audit judged are exactly those a user gets from the files.
    again = read_released(folder / "release", record["preprocess"])
    assert record["inputs"]["synthetic"] == slices_fingerprint(again)
    assert record["inputs"]["synthetic"]["patients"] == 4 and set(record["inputs"]) == {"train", "holdout", "test",
                                                                                         "synthetic"}
    assert record["tolerances"][CHECK]["abs"] >= TOLERANCE_FLOOR and record["threads"] >= 1
    assert record["model"]["checksums"] and manifest["checks"] == outcome.checks
    assert len(list((folder / "release" / "dicom").rglob("*.dcm"))) > 0  # made from the same read-back cohort
    assert {"stage data", "audit", "export"} <= set(outcome.stage_seconds)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no staging left behind
    sheet = (folder / "release" / "datasheet.html").read_text()
    assert "cmri-release verify RELEASE --spec SPEC.toml" in sheet and "What was audited is what you hold" in sheet


def test_the_export_reads_back_as_written(tiny_cohort, tmp_path):
    """Written and read back, the slices are the same pixels (an on-grid volume is not re-cropped), up to the
    patient's own intensity window applied again, as for any real patient; the release audits the files anyway."""
    config = PreprocessConfig(size=32)
    slices = cohort_to_slices(tiny_cohort, config)
    back = cohort_to_slices(read_cohort(write_cohort(slices_to_cohort(slices), tmp_path / "data")), config)
    assert back.images.shape == slices.images.shape
    assert np.array_equal(back.labels, slices.labels)
    assert np.abs(back.images - slices.images).max() < 1e-2


def test_release_then_verify_reproduces(released):
    folder, spec_file, outcome = released
    result = verify(folder / "release", "--spec", spec_file)
    assert result.exit_code == 0, result.output
    assert "VERIFIED" in result.stdout and CHECK in result.stdout and "reproduced" in result.stdout
    assert "verdict pass recorded" in result.stdout.splitlines()[0]
    recorded = outcome.checks[0]["estimate"]
    assert f"{recorded:.4g}" in result.stdout


def test_verify_pins_the_recorded_thread_count(released, tmp_path):
    import torch

    folder, spec_file, _ = released
    copy = tmp_path / "release"
    shutil.copytree(folder / "release", copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["audit"]["threads"] = 3
    (copy / MANIFEST).write_text(json.dumps(manifest))
    before = torch.get_num_threads()
    IntensityGap.threads_seen.clear()
    result = verify(copy, "--spec", spec_file, "--model", folder / "release.audit" / "model")
    assert result.exit_code == 0, result.output
    assert IntensityGap.threads_seen == [3] and torch.get_num_threads() == before


def test_an_altered_data_file_fails_on_its_checksum(released, tmp_path):
    folder, spec_file, _ = released
    copy = tmp_path / "release"
    shutil.copytree(folder / "release", copy)
    victim = sorted((copy / "data").rglob("*_gt.nii.gz"))[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = verify(copy, "--spec", spec_file, "--model", folder / "release.audit" / "model")
    assert result.exit_code == 1, result.output
    assert "sha256 differs" in result.stdout and "NOT VERIFIED" in result.stdout


def test_data_regenerated_with_another_seed_fail_on_the_values(released, tmp_path):
    """Someone re-synthesised the data and rewrote the checksums: the files verify, the audit does not."""
    from generators import load_generator
    from generators.synthesis import synthesize

    folder, spec_file, _ = released
    copy = tmp_path / "release"
    shutil.copytree(folder / "release", copy)
    model = folder / "release.audit" / "model"
    other = synthesize(load_generator(model), 4, seed=1, quiet=True)
    shutil.rmtree(copy / "data")
    write_cohort(slices_to_cohort(other), copy / "data")
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"] = file_entries(copy)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    assert verify_manifest(copy) == []
    result = verify(copy, "--spec", spec_file, "--model", model)
    assert result.exit_code == 1, result.output
    assert f"{CHECK}: estimate differs by" in result.stdout and "DIFFERS" in result.stdout
    assert "synthetic: not the cohort that was audited" in result.stdout


def test_paths_release_verifies_and_audit_gives_the_recorded_verdict(released, tmp_path):
    """Real cohorts as folders: `verify --train/--holdout/--test` reproduces, and `audit` on data/ agrees."""
    model = released[0] / "release.audit" / "model"
    real = make_phantom(9, seed=3)
    folders = {}
    for name, ids in (("train", real.ids[:4]), ("holdout", real.ids[4:7]), ("test", real.ids[7:])):
        folders[name] = write_cohort(real.subset(ids), tmp_path / name)
    data = "\n".join(f'{k} = "{v}"' for k, v in folders.items())
    spec_file = write_spec(tmp_path / "spec", generator=f'model = "{model}"', data=data)
    outcome = run_release(load_spec(spec_file), quiet=True)
    assert outcome.status == "released", outcome.message
    release = tmp_path / "spec" / "release"
    args = [a for k, v in folders.items() for a in (f"--{k}", v)]
    result = verify(release, *args, "--model", model)
    assert result.exit_code == 0, result.output
    result = verify(release, "--spec", spec_file)  # the spec's own model is the default
    assert result.exit_code == 0, result.output
    # A reviewer's plain audit of the released files, with the model and the recorded seed, gives the verdict.
    audit = CliRunner().invoke(main, ["audit", "--synthetic", str(release / "data"), *map(str, args), "--model",
                                      str(model), "--seed", "0", "--quiet", "--out", str(tmp_path / "re-audit")])
    assert audit.exit_code == 0, audit.output
    again = json.loads((tmp_path / "re-audit" / "audit.json").read_text())
    recorded = json.loads((release / MANIFEST).read_text())
    assert again["verdict"] == recorded["verdict"] == "pass"
    assert [c["estimate"] for c in again["checks"]] == [c["estimate"] for c in recorded["checks"]]
    # Another real holdout is not the audited one: verify says so, and the values move.
    wrong = CliRunner().invoke(main, ["verify", str(release), "--train", str(folders["train"]), "--holdout",
                                      str(folders["test"]), "--test", str(folders["holdout"]), "--model", str(model)])
    assert wrong.exit_code == 1 and "holdout: not the cohort that was audited" in wrong.stdout


def test_a_blocked_release_leaves_nothing(released, tmp_path):
    model = released[0] / "release.audit" / "model"
    spec_file = write_spec(tmp_path, generator=f'model = "{model}"', thresholds=f'"{CHECK}" = -1.0')
    outcome = run_release(load_spec(spec_file), quiet=True)
    assert outcome.status == "blocked" and outcome.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release.audit", "spec.toml"]  # no staging, no release


@pytest.mark.parametrize("make,words", [
    (lambda f: None, "no manifest: not a release folder"),
    (lambda f: (f / MANIFEST).write_text(json.dumps({"manifest_version": 1, "files": []})),
     "records no audit settings"),
])
def test_verify_errors_exit_2_with_one_line(tmp_path, make, words):
    folder = tmp_path / "r"
    folder.mkdir()
    make(folder)
    result = CliRunner().invoke(main, ["verify", str(folder), "--train", str(tmp_path), "--holdout", str(tmp_path)])
    assert result.exit_code == 2 and words in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_verify_needs_the_real_cohorts(tmp_path):
    result = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 2 and "--spec SPEC, or --train and --holdout" in result.output


def test_verify_needs_the_model_when_the_audit_used_it(released, tmp_path):
    folder, spec_file, _ = released
    copy = tmp_path / "elsewhere"
    shutil.copytree(folder / "release", copy)  # no elsewhere.audit/model beside it; the spec's audit folder has it
    result = verify(copy, "--spec", spec_file)
    assert result.exit_code == 0, result.output
    spec = tmp_path / "s" / "spec.toml"
    spec.parent.mkdir()
    spec.write_text(spec_file.read_text())  # same spec, its audit folder (s/release.audit) holds no model
    result = verify(copy, "--spec", spec)
    assert result.exit_code == 2 and "give its model folder with --model" in result.stderr


def test_a_different_spec_is_named(released, tmp_path):
    folder, spec_file, _ = released
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_file.read_text().replace("subjects = 12", "subjects = 13"))
    result = verify(folder / "release", "--spec", spec, "--model", folder / "release.audit" / "model")
    assert result.exit_code == 1
    assert "spec data.phantom.subjects: 12 recorded, 13 given" in result.stdout
    assert "train: not the cohort that was audited" in result.stdout


def _check(estimate, lower, upper, verdict="pass", threshold=0.5, op="<="):
    return {"name": CHECK, "estimate": estimate, "lower": lower, "upper": upper, "verdict": verdict,
            "threshold": threshold, "op": op}


@pytest.mark.parametrize("now,reproduced,words", [
    (_check(0.1, 0.05, 0.2), True, ""),
    (_check(0.1 + 5e-7, 0.05, 0.2 - 5e-7), True, ""),
    (_check(0.1 + 2e-6, 0.05, 0.2), False, "estimate differs by 2e-06 (tolerance 1e-06)"),
    (_check(0.1, 0.05, 0.6, "inconclusive"), False, "verdict pass recorded, inconclusive now"),
    (_check(0.1, None, 0.2), False, "lower 0.05 recorded, None now"),
    (_check(0.1, 0.05, 0.2, threshold=0.4), False, "threshold <= 0.5 recorded, <= 0.4 now"),
])
def test_compare_checks(now, reproduced, words):
    [comp] = compare_checks([_check(0.1, 0.05, 0.2)], [now], {CHECK: {"abs": 1e-6}})
    assert comp.reproduced is reproduced
    assert words in "; ".join(comp.problems)


def test_compare_checks_names_missing_and_extra_checks():
    other = {**_check(0.1, 0.05, 0.2), "name": "privacy.other"}
    comps = compare_checks([_check(0.1, 0.05, 0.2)], [other], {})
    assert [(c.name, c.problems) for c in comps] == [
        (CHECK, ["not re-measured (the re-audit produced no such check)"]),
        ("privacy.other", ["re-measured but not recorded"])]


def test_tolerances_come_from_the_measurement():
    from cmri_release.verify import TOLERANCE_FACTOR, measured_tolerances

    assert tolerance_for("privacy.never_measured") == {"abs": TOLERANCE_FLOOR,
                                                        "basis": "not measured: must reproduce exactly"}
    for name, entry in measured_tolerances()["checks"].items():
        measured = max(entry["threads_1_vs_2"], entry.get("rerun") or 0.0, entry.get("other_kernels") or 0.0)
        assert tolerance_for(name)["abs"] == max(TOLERANCE_FACTOR * measured, TOLERANCE_FLOOR)


def test_a_check_not_measured_on_other_kernels_must_reproduce_exactly(monkeypatch):
    import cmri_release.verify as verify

    table = {"checks": {CHECK: {"threads_1_vs_2": 0.5, "rerun": 0.0, "other_kernels": None}}}
    monkeypatch.setattr(verify, "measured_tolerances", lambda: table)
    assert verify.tolerance_for(CHECK) == {"abs": TOLERANCE_FLOOR,
                                           "basis": "not measured on other kernels: must reproduce exactly"}
    table["checks"][CHECK]["other_kernels"] = 0.25
    assert verify.tolerance_for(CHECK)["abs"] == verify.TOLERANCE_FACTOR * 0.5


def test_spec_differences():
    a = {"seed": 0, "data": {"size": 32, "phantom": {"seed": 0}}, "export": {"out": "x"}}
    b = {"seed": 0, "data": {"size": 32, "phantom": {"seed": 1}}, "export": {"out": "y"}}
    assert spec_differences(a, b) == ["data.phantom.seed: 0 recorded, 1 given"]
    assert spec_differences(a, a) == []


def test_the_demo_spec_file_is_the_spec_demo_records(tmp_path):
    """`demo --out D` then `verify D --spec S` with S from `demo --write-spec`: the two specs agree but for [export]."""
    from cmri_release.export import public_spec
    from cmri_release.spec import default_spec, default_spec_text, parse_spec, with_output

    ran = public_spec(with_output(default_spec(tmp_path), tmp_path / "D").to_dict())
    written = public_spec(parse_spec(default_spec_text(), base_dir=tmp_path / "elsewhere").to_dict())
    assert spec_differences(ran, written) == []
