"""Every bad input of the catalogue, end to end through every command that reads a cohort.

For each case and command: exit 2, exactly one line on stderr that names the bad file and says what is wrong, no
traceback anywhere, and nothing written (neither the outputs nor anything inside the input). The readers' own
tests (tests/io) check the messages per module; this matrix checks that no command path loses them.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reliability_cases import CASES, Case, build
from reliability_cli import TINY_TRAIN, env, invoke, tree
from reliability_data import huge_header_nifti, write_ring_cohort, write_spec

RELEASE_SPEC = """seed = 0
[data]
size = 16
{data}
[generator]
{generator}
[synthesis]
subjects = 1
[audit]
groups = ["privacy"]
utility_epochs = 1
[export]
out = "{out}"
"""
SPLIT = "[data.split]\ntrain = 0.5\nholdout = 0.5\ntest = 0.0"


def release_spec(folder: Path, data: str, out: Path, generator: str = "epochs = 1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_spec(folder, RELEASE_SPEC.format(data=data, out=out, generator=generator))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("good")
    return {"train": write_ring_cohort(root / "train", 4), "synthetic": write_ring_cohort(root / "syn", 2, "s", 20),
            "holdout": write_ring_cohort(root / "holdout", 2, "h", 10)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each broken cohort built once (lazily) and shared by the commands that read it."""
    cache = {}

    def get(case: Case) -> tuple[Path, Path]:
        if case.name not in cache:
            cache[case.name] = build(case, tmp_path_factory.mktemp("case"))
        return cache[case.name]
    return get


def command_args(command: str, cohort: Path, out: Path, good: dict, model: Path) -> list:
    if command == "inspect":
        return ["inspect", cohort]
    if command == "train":
        return ["train", cohort, "--out", out / "model", *TINY_TRAIN]
    if command == "synthesize":
        return ["synthesize", model, "--out", out / "synthetic", "--subjects", "1", "--masks", cohort, "--quiet"]
    if command == "audit":
        return ["audit", "--train", good["train"], "--holdout", cohort, "--synthetic", good["synthetic"], "--only",
                "privacy", "--size", "16", "--out", out / "audit", "--quiet"]
    spec = release_spec(out / "spec", f'cohort = "{cohort}"\n{SPLIT}', out / "release")
    return ["release", spec, "--quiet"]


def assert_refused(ran, named: Path, problem: str) -> None:
    assert ran.exception is None, repr(ran.exception)
    assert ran.exit_code == 2, (ran.exit_code, ran.stdout, ran.stderr)
    assert "Traceback" not in ran.stdout + ran.stderr
    assert len(ran.error_lines) == 1, ran.stderr
    line = ran.error_lines[0]
    assert line.startswith("error: ") and str(named) in line and problem in line, line


@pytest.mark.parametrize("command", ["inspect", "train", "synthesize", "audit", "release"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_cohort_is_refused_by_every_command(case, command, built, good, tiny_model, tmp_path):
    cohort, named = built(case)
    args = command_args(command, cohort, tmp_path / "out", good, tiny_model)
    before = tree(tmp_path), tree(cohort.parent)
    ran = invoke(*args)
    assert_refused(ran, named, case.problem)
    assert (tree(tmp_path), tree(cohort.parent)) == before, "the command wrote something"


def test_too_small_cohort_for_the_splits(tmp_path):
    small = write_ring_cohort(tmp_path / "small", 2)
    spec = release_spec(tmp_path / "spec", f'cohort = "{small}"', tmp_path / "release")
    before = tree(tmp_path)
    ran = invoke("release", spec, "--quiet")
    assert_refused(ran, small, "the cohort has 2 subjects, too few for a non-empty")
    assert tree(tmp_path) == before


def test_too_few_holdout_patients_is_refused_before_training(tmp_path, good):
    one = write_ring_cohort(tmp_path / "one", 1, "h", 10)
    spec = release_spec(tmp_path / "spec", f'train = "{good["train"]}"\nholdout = "{one}"', tmp_path / "release")
    before = tree(tmp_path)
    ran = invoke("release", spec, "--quiet")
    assert_refused(ran, one, "1 holdout patient(s); the audit needs at least 2")
    assert "train" not in ran.stdout  # refused in the data stage: no training was paid for
    ran = invoke("audit", "--train", good["train"], "--holdout", one, "--synthetic", good["synthetic"], "--only",
                 "privacy", "--size", "16", "--out", tmp_path / "audit", "--quiet")
    assert_refused(ran, one, "1 patient(s); the audit needs at least 2")
    assert tree(tmp_path) == before


def test_a_patient_in_two_splits_is_refused(tmp_path, good):
    spec = release_spec(tmp_path / "spec", f'train = "{good["train"]}"\nholdout = "{good["train"]}"',
                        tmp_path / "release")
    ran = invoke("release", spec, "--quiet")
    assert_refused(ran, spec, "train, holdout and test must be different folders")
    copy = write_ring_cohort(tmp_path / "copy", 2)  # p000, p001 again, under another folder
    ran = invoke("audit", "--train", good["train"], "--holdout", copy, "--synthetic", good["synthetic"], "--only",
                 "privacy", "--size", "16", "--out", tmp_path / "audit", "--quiet")
    assert_refused(ran, copy, "also in train")
    assert not (tmp_path / "audit").exists()


# --------------------------------------------------------------------------------------------------------------
# Outputs: a file where a folder must go, or a folder inside an input.

def _output_cases(root: Path, good: dict, model: Path) -> dict[str, tuple[list, Path, str]]:
    afile = root / "afile"
    inside_train = good["train"] / "new"
    return {
        "train --out is a file": (["train", good["train"], "--out", afile, *TINY_TRAIN], afile,
                                  "exists and is not an empty folder"),
        "train --out inside DATA": (["train", good["train"], "--out", inside_train, *TINY_TRAIN], inside_train,
                                    "inside the input DATA"),
        "synthesize --out is a file": (["synthesize", model, "--out", afile, "--subjects", "1", "--quiet"], afile,
                                       "exists and is not an empty folder"),
        "synthesize --out inside MODEL": (["synthesize", model, "--out", model / "syn", "--subjects", "1", "--quiet"],
                                          model / "syn", "inside the input MODEL"),
        "synthesize --out inside --masks": (["synthesize", model, "--out", inside_train, "--subjects", "1", "--masks",
                                             good["train"], "--quiet"], inside_train, "inside the input --masks"),
        "audit --out is a file": (["audit", "--train", good["train"], "--holdout", good["holdout"], "--synthetic",
                                   good["synthetic"], "--only", "privacy", "--out", afile, "--quiet"], afile,
                                  "exists and is not a folder"),
        "audit --out inside --train": (["audit", "--train", good["train"], "--holdout", good["holdout"], "--synthetic",
                                        good["synthetic"], "--only", "privacy", "--out", good["train"], "--quiet"],
                                       good["train"], "inside the input --train"),
        "phantom OUT is a file": (["phantom", afile, "--subjects", "1", "--quiet"], afile,
                                  "exists and is not an empty folder"),
    }


OUTPUT_CASES = ["train --out is a file", "train --out inside DATA", "synthesize --out is a file",
                "synthesize --out inside MODEL", "synthesize --out inside --masks", "audit --out is a file",
                "audit --out inside --train", "phantom OUT is a file"]


@pytest.mark.parametrize("name", OUTPUT_CASES)
def test_output_that_is_a_file_or_inside_an_input(name, tmp_path, good, tiny_model):
    (tmp_path / "afile").write_text("not a folder")
    args, named, problem = _output_cases(tmp_path, good, tiny_model)[name]
    watched = [tmp_path, good["train"], tiny_model]
    before = [tree(p) for p in watched]
    ran = invoke(*args)
    assert_refused(ran, named, problem)
    assert [tree(p) for p in watched] == before


@pytest.mark.parametrize("where, problem", [("afile", "is a file, not a folder"),
                                            ("train/release", "overlaps the input `train`"),
                                            ("holdout", "overlaps the input `holdout`")])
def test_release_output_that_is_a_file_or_inside_an_input(where, problem, tmp_path, good):
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / where if where == "afile" else good[where.split("/")[0]].joinpath(*where.split("/")[1:])
    spec = release_spec(tmp_path / "spec", f'train = "{good["train"]}"\nholdout = "{good["holdout"]}"', out)
    before = tree(tmp_path), tree(good["train"].parent)
    ran = invoke("release", spec, "--quiet")
    assert_refused(ran, spec, problem)
    assert (tree(tmp_path), tree(good["train"].parent)) == before


# --------------------------------------------------------------------------------------------------------------
# Specs: wrong types, unknown keys, impossible values. The line names the spec file and the key.

SPEC_CASES = {
    "wrong type": ("[data]\nsize = 16", "[data]\nsize = \"16\"", "[data] size: expected an integer, got a string"),
    "unknown section": ("[generator]", "[generatr]", "generatr: unknown key (did you mean 'generator'?)"),
    "unknown key": ("epochs = 1", "epoch = 1", "[generator] epoch: unknown key (did you mean 'epochs'?)"),
    "fractions over 1": ("test = 0.0", "test = 0.5", "[data.split]: fractions must sum to 1"),
    "negative epsilon": ("[audit]", "[privacy]\ndp = true\nepsilon = -1.0\n[audit]",
                         "[privacy] epsilon: must be greater than 0, got -1"),
    "delta of 1": ("[audit]", "[privacy]\ndp = true\ndelta = 1.0\n[audit]", "[privacy] delta: must be below 1"),
    "zero subjects": ("subjects = 1", "subjects = 0", "[synthesis] subjects: must be at least 1, got 0"),
    "audit without privacy": ('groups = ["privacy"]', 'groups = ["fidelity"]', "[audit] groups: must include 'privacy'"),
    "threshold not a number": ("[export]", "[thresholds]\n\"privacy.mia_auc\" = \"low\"\n[export]",
                               "privacy.mia_auc: expected a number, got a string"),
    "threshold nan": ("[export]", "[thresholds]\n\"privacy.mia_auc\" = nan\n[export]",
                      "privacy.mia_auc: must be a finite number, got nan"),
    "unknown check": ("[export]", "[thresholds]\n\"privacy.mia_acu\" = 0.5\n[export]",
                      "privacy.mia_acu: unknown key (did you mean 'privacy.mia_auc'?)"),
    "not TOML": ("seed = 0", "seed = = 0", "not valid TOML"),
}


@pytest.mark.parametrize("name", list(SPEC_CASES))
def test_bad_spec(name, tmp_path, good):
    old, new, problem = SPEC_CASES[name]
    spec = release_spec(tmp_path / "spec", f'cohort = "{good["train"]}"\n{SPLIT}', tmp_path / "release")
    text = spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new, 1))
    before = tree(tmp_path)
    ran = invoke("release", spec, "--quiet")
    assert_refused(ran, spec, problem)
    assert tree(tmp_path) == before


def test_spec_that_is_not_text_or_missing(tmp_path):
    binary = tmp_path / "spec.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    assert_refused(invoke("release", binary), binary, "cannot read the spec")
    missing = tmp_path / "nothere.toml"
    assert_refused(invoke("release", missing), missing, "no such spec file")


# --------------------------------------------------------------------------------------------------------------
# Huge dimensions in a tiny header: refused before allocating (peak memory of a real process).

RSS_CHILD = """
import resource, sys
from cmri_release.cli import main

def inspect(folder):
    code = main(["inspect", folder], standalone_mode=False)
    return code or 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

print("rss", *inspect(sys.argv[1]), *inspect(sys.argv[2]))
"""


def test_huge_dimensions_are_refused_before_allocating(tmp_path):
    """One process inspects a good cohort, then one whose header asks for 256 GiB: its peak memory must not grow."""
    good = write_ring_cohort(tmp_path / "good", 2)
    bad = write_ring_cohort(tmp_path / "bad", 2)
    huge = sorted(bad.rglob("*_frame01.nii.gz"))[0]
    asked = huge_header_nifti(huge)
    assert asked > 200 * 2**30 and huge.stat().st_size < 1024  # more than 200 GiB asked in under a kilobyte
    done = subprocess.run([sys.executable, "-c", RSS_CHILD, str(good), str(bad)], capture_output=True, text=True,
                          env=env(), timeout=300)
    code_good, rss_good, code_bad, rss_bad = done.stdout.split("rss ")[-1].split()
    assert (code_good, code_bad) == ("0", "2"), done.stderr
    assert str(huge) in done.stderr
    assert float(rss_bad) < float(rss_good) + 64, (rss_good, rss_bad)  # MiB
