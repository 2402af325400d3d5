"""The release spec: defaults round-trip, and every mistake is named with its section, key and a fix."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cmri_release.core.errors import SpecError
from cmri_release.spec import (DataSpec, ExportSpec, GeneratorSpec, PhantomSpec, SplitSpec, default_spec,
                               default_spec_text, load_spec, parse_spec, with_output)

CHECKS = {
    "privacy.near_copy_rate": (0.02, "<=", "share of synthetic patients that copy a training patient"),
    "privacy.mia_auc": (0.6, "<=", "best membership-inference AUC"),
    "fidelity.mask_dice_ratio": (0.8, ">=", "mask consistency against real"),
}
GENERATORS = ("flow", "ddpm", "vae", "gan")
PHANTOM = "[data.phantom]\nsubjects = 12\n"


def parse(text, base, **kw):
    return parse_spec(text, source="spec.toml", base_dir=base, known_checks=CHECKS, known_generators=GENERATORS, **kw)


def error_of(text, base) -> str:
    with pytest.raises(SpecError) as info:
        parse(text, base)
    return str(info.value)


def test_default_text_parses_back_to_the_defaults(tmp_path):
    text = default_spec_text(known_checks=CHECKS)
    spec = parse(text, tmp_path)
    assert spec == default_spec(tmp_path, known_checks=CHECKS)
    # Built from the dataclasses, not from the text: compare the pieces a user relies on.
    assert spec.data == DataSpec(phantom=PhantomSpec())
    assert spec.generator == GeneratorSpec()
    assert spec.export.out == tmp_path.resolve() / "release"
    assert spec.export.audit_path == tmp_path.resolve() / "release.audit"
    assert dict(spec.thresholds) == {name: entry[0] for name, entry in CHECKS.items()}
    # Comments explain each threshold's direction and meaning.
    assert "# passes when value <= threshold: best membership-inference AUC" in text


def test_default_text_with_the_registered_auditors_parses(tmp_path):
    # The real registry (whatever auditors have landed) must also round-trip.
    spec = parse_spec(default_spec_text(), source="spec.toml", base_dir=tmp_path, known_generators=GENERATORS)
    assert spec == default_spec(tmp_path)


def test_threshold_override_keeps_other_defaults(tmp_path):
    spec = parse(PHANTOM + '[thresholds]\n"privacy.mia_auc" = 0.55\n', tmp_path)
    assert spec.thresholds["privacy.mia_auc"] == 0.55
    assert spec.thresholds["privacy.near_copy_rate"] == 0.02
    with pytest.raises(TypeError):
        spec.thresholds["privacy.mia_auc"] = 1.0  # frozen


def test_unknown_threshold_names_the_nearest_check(tmp_path):
    msg = error_of(PHANTOM + '[thresholds]\n"privacy.near_copy_rte" = 0.1\n', tmp_path)
    assert msg.startswith("spec.toml: [thresholds] privacy.near_copy_rte: unknown key")
    assert "did you mean 'privacy.near_copy_rate'?" in msg


@pytest.mark.parametrize("text,expected", [
    (PHANTOM + "[generatr]\nname = 'flow'\n", "(top level) generatr: unknown key (did you mean 'generator'?)"),
    (PHANTOM + "[generator]\nepoch = 3\n", "[generator] epoch: unknown key (did you mean 'epochs'?)"),
    (PHANTOM + "[generator]\nepochs = 'ten'\n", "[generator] epochs: expected an integer, got a string 'ten'"),
    (PHANTOM + "[generator]\nepochs = 0\n", "[generator] epochs: must be at least 1, got 0"),
    (PHANTOM + "[generator]\nepochs = 2\nminutes = 1.0\n", "[generator] minutes: give `epochs` or `minutes`"),
    (PHANTOM + "[generator]\nname = 'flwo'\n", "[generator] name: unknown generator 'flwo' (did you mean 'flow'?)"),
    (PHANTOM + "[generator]\ndevice = 'gpu'\n", "[generator] device: must be 'cpu', 'cuda' or 'cuda:N'"),
    (PHANTOM + "[privacy]\nepsilon = -1.0\n", "[privacy] epsilon: must be greater than 0, got -1"),
    (PHANTOM + "[privacy]\ndelta = 1.5\n", "[privacy] delta: must be below 1, got 1.5"),
    (PHANTOM + "[privacy]\ndp = 'yes'\n", "[privacy] dp: expected true or false"),
    (PHANTOM + "[privacy]\nepsilon = nan\n", "[privacy] epsilon: must be a finite number"),
    (PHANTOM + "[synthesis]\nsubjects = 0\n", "[synthesis] subjects: must be at least 1, got 0"),
    (PHANTOM + "[synthesis]\nmasks = 'holdot'\n", "[synthesis] masks: must be one of 'generated', 'holdout', "
                                                  "got 'holdot' (did you mean 'holdout'?)"),
    (PHANTOM + "[export]\nformats = ['nifti', 'dicm']\n", "[export] formats: 'dicm' is not one of 'nifti', "
                                                          "'dicom', 'nnunet', 'monai', 'dicom-seg' (did you mean "
                                                          "'dicom'?)"),
    (PHANTOM + "[export]\nformats = []\n", "[export] formats: expected a non-empty list of strings"),
    (PHANTOM + "[export]\nformats = ['dicom']\n", "[export] formats: must include 'nifti'"),
    (PHANTOM + "[audit]\ngroups = ['fidelity']\n", "[audit] groups: must include 'privacy'"),
    (PHANTOM + "[data.split]\ntrain = 0.6\nholdout = 0.3\ntest = 0.3\n", "[data.split]: fractions must sum to 1"),
    (PHANTOM + "[data.split]\ntrain = 1.0\nholdout = 0.0\ntest = 0.0\n", "[data.split]: train and holdout must"),
    ("[data.phantom]\nsubjects = 1\n", "[data.phantom] subjects: must be at least 3, got 1"),
    (PHANTOM + "[data.phantom]\n", "not valid TOML"),
    ("seed = 1\n", "[data]: missing"),
    ("[data]\nsize = 64\n", "[data]: no data source"),
    (PHANTOM + "seed = -3\n", "[data.phantom] seed: must be at least 0, got -3"),  # TOML: it belongs to the table
    ("seed = -3\n" + PHANTOM, "(top level) seed: must be at least 0, got -3"),
    (PHANTOM + "[thresholds]\n'privacy.mia_auc' = true\n", "[thresholds] privacy.mia_auc: expected a number"),
])
def test_mistakes_name_the_section_key_and_problem(tmp_path, text, expected):
    msg = error_of(text, tmp_path)
    assert msg.startswith("spec.toml: ")
    assert expected in msg


def test_key_after_table_is_reported_in_that_table(tmp_path):
    # TOML puts `seed` under [data.phantom] when written after it; the error must say so, not pass silently.
    msg = error_of("[data.phantom]\nsubjects = 5\nsubject = 3\n", tmp_path)
    assert "[data.phantom] subject: unknown key (did you mean 'subjects'?)" in msg


def test_relative_paths_resolve_against_the_spec_folder(tmp_path):
    for name in ("train", "holdout", "test"):
        (tmp_path / "cohorts" / name).mkdir(parents=True)
    spec_file = tmp_path / "specs" / "release.toml"
    spec_file.parent.mkdir()
    spec_file.write_text('[data]\ntrain = "../cohorts/train"\nholdout = "../cohorts/holdout"\n'
                         'test = "../cohorts/test"\n[export]\nout = "../out/rel"\nformats = ["dicom", "nifti"]\n')
    spec = load_spec(spec_file, known_checks=CHECKS, known_generators=GENERATORS)
    assert spec.data.source == "paths"
    assert spec.data.train == (tmp_path / "cohorts" / "train").resolve()
    assert spec.export.out == (tmp_path / "out" / "rel").resolve()
    assert spec.export.formats == ("nifti", "dicom")  # canonical order
    assert spec.source == str(spec_file)
    assert spec.to_dict()["data"]["train"] == str((tmp_path / "cohorts" / "train").resolve())


def test_missing_input_folder_is_named(tmp_path):
    msg = error_of('[data]\ncohort = "nowhere"\n', tmp_path)
    assert f"[data] cohort: {(tmp_path / 'nowhere').resolve()} does not exist" in msg


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("x")
    assert "[export] out: " in error_of(PHANTOM + '[export]\nout = "taken"\n', tmp_path)
    assert "is a file, not a folder" in error_of(PHANTOM + '[export]\nout = "taken"\n', tmp_path)


def test_output_inside_an_input_cohort_is_refused(tmp_path):
    (tmp_path / "all").mkdir()
    msg = error_of('[data]\ncohort = "all"\n[export]\nout = "all/release"\n', tmp_path)
    assert "[export] out:" in msg and "overlaps the input `cohort`" in msg
    msg = error_of('[data]\ncohort = "all"\n[export]\nout = "rel"\naudit_dir = "all/audit"\n', tmp_path)
    assert "[export] audit_dir:" in msg and "overlaps the input `cohort`" in msg


def test_audit_folder_may_not_sit_in_the_release(tmp_path):
    msg = error_of(PHANTOM + '[export]\nout = "rel"\naudit_dir = "rel/audit"\n', tmp_path)
    assert "audit_dir" in msg and "overlaps the release folder" in msg


def test_one_data_source_only(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    msg = error_of('[data]\ncohort = "a"\n[data.phantom]\nsubjects = 5\n', tmp_path)
    assert "give one data source, not cohort and phantom" in msg
    assert "[data] holdout: missing: explicit cohorts need both" in error_of('[data]\ntrain = "a"\n', tmp_path)
    assert "must be different folders" in error_of('[data]\ntrain = "a"\nholdout = "a"\n', tmp_path)
    msg = error_of('[data]\ntrain = "a"\nholdout = "b"\n[data.split]\ntrain = 0.5\nholdout = 0.5\ntest = 0.0\n',
                   tmp_path)
    assert "[data] split: applies only to" in msg


def test_split_without_test(tmp_path):
    spec = parse(PHANTOM + "[data.split]\ntrain = 0.7\nholdout = 0.3\ntest = 0.0\n", tmp_path)
    assert spec.data.split == SplitSpec(0.7, 0.3, 0.0)
    assert spec.data.split.fractions() == {"train": 0.7, "holdout": 0.3}


def test_loaded_model_excludes_training_keys(tmp_path):
    (tmp_path / "model").mkdir()
    spec = parse(PHANTOM + '[generator]\nmodel = "model"\n', tmp_path)
    assert spec.generator.model == (tmp_path / "model").resolve()
    assert "a loaded `model` is not trained again" in error_of(PHANTOM + '[generator]\nmodel = "model"\nepochs = 3\n',
                                                              tmp_path)
    assert "[privacy] dp:" in error_of(PHANTOM + '[generator]\nmodel = "model"\n[privacy]\ndp = true\n', tmp_path)


def test_dp_needs_an_epoch_budget_up_front(tmp_path):
    assert "DP training needs `epochs`" in error_of(PHANTOM + "[generator]\nminutes = 2.0\n[privacy]\ndp = true\n",
                                                    tmp_path)
    assert parse(PHANTOM + "[generator]\nepochs = 2\n[privacy]\ndp = true\n", tmp_path).privacy.dp


def test_with_output_moves_release_and_audit(tmp_path):
    spec = with_output(parse(PHANTOM, tmp_path), tmp_path / "demo")
    assert spec.export.out == (tmp_path / "demo").resolve()
    assert spec.export.audit_path == (tmp_path / "demo.audit").resolve()


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.toml", known_checks=CHECKS, known_generators=GENERATORS)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(bad, known_checks=CHECKS, known_generators=GENERATORS)


def test_default_text_is_valid_toml_with_comments():
    text = default_spec_text(known_checks=CHECKS)
    doc = tomllib.loads(text)
    assert doc["data"]["phantom"]["subjects"] == PhantomSpec.subjects
    assert doc["export"]["out"] == str(ExportSpec.out)
    assert sum(line.startswith("#") for line in text.splitlines()) > 20
    assert Path(ExportSpec.out).name == "release"
