import gzip
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from cmri_release.core.cohort import Cohort
from cmri_release.commands.inspect_cmd import inspect_command
from cmri_release.inspect import format_inspect, inspect_cohort
from cmri_release.io import write_cohort
from dicom_series_writer import write_dicom_series
from cmri_release.io.nifti import save_nifti


@pytest.fixture
def cohort_dir(tmp_path, tiny_cohort):
    write_cohort(tiny_cohort, tmp_path / "c")
    return tmp_path / "c"


def test_summary_matches_ground_truth(cohort_dir, tiny_cohort):
    report = inspect_cohort(cohort_dir)
    assert report["usable"] and report["problems"] == []
    assert report["layout"] == "cohort"
    assert report["n_subjects"] == report["n_labelled_subjects"] == 6
    assert report["n_slices"] == sum(s.shape[2] * 2 for s in tiny_cohort)
    assert report["vendors"] == {"A": 3, "B": 3} and report["groups"] == {"NOR": 6}
    assert report["spacing"] == {"min": [1.5, 1.5, 8.0], "max": [1.5, 1.5, 8.0]}
    assert report["shape"] == {"min": [96, 80, 6], "max": [96, 80, 6]}
    voxel_ml = 1.5 * 1.5 * 8.0 / 1000
    for row, subject in zip(report["subjects"], tiny_cohort):
        assert row["id"] == subject.id and row["vendor"] == subject.vendor
        for phase in ("ED", "ES"):
            label = subject.frames[phase].label
            expected = {"RV": (label == 1).sum() * voxel_ml, "MYO": (label == 2).sum() * voxel_ml,
                        "LV": (label == 3).sum() * voxel_ml}
            assert row["volumes_ml"][phase] == pytest.approx(expected, abs=1e-3)
    assert json.loads(json.dumps(report)) == report


def test_image_only_cohort_is_usable_with_null_volumes(tmp_path, tiny_cohort):
    for subject in tiny_cohort:
        for frame in subject.frames.values():
            frame.label = None
    write_cohort(tiny_cohort, tmp_path)
    report = inspect_cohort(tmp_path)
    assert report["usable"] and report["n_labelled_subjects"] == 0
    assert all(row["volumes_ml"] is None for row in report["subjects"])


def test_cli_text_and_json_on_a_good_cohort(cohort_dir):
    runner = CliRunner()
    text = runner.invoke(inspect_command, [str(cohort_dir)])
    assert text.exit_code == 0, text.output
    assert "subjects: 6 (6 labelled), short-axis slices (ED+ES): 72" in text.stdout
    assert "usable: yes" in text.stdout and text.stderr == ""
    as_json = runner.invoke(inspect_command, [str(cohort_dir), "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout)["n_subjects"] == 6


def test_every_problem_is_collected_and_good_subjects_still_summarised(cohort_dir, tiny_cohort):
    (cohort_dir / "s01" / "Info.cfg").unlink()
    gt = cohort_dir / "s03" / "s03_frame10_gt.nii.gz"
    gt.write_bytes(b"not gzip")
    report = inspect_cohort(cohort_dir)
    assert not report["usable"]
    assert report["problems"] == [f"{cohort_dir / 's01' / 'Info.cfg'}: file not found",
                                  f"{gt}: named .gz but is not a gzip file"]
    assert report["n_subjects"] == 4
    assert "problems: 2" in format_inspect(report) and "usable: no" in format_inspect(report)


# -- bad inputs: each one through the command, exit 2, one line per problem naming the file --------------------

def _truncate(d, _):
    f = d / "s00" / "s00_frame01.nii.gz"
    f.write_bytes(f.read_bytes()[:400])
    return f, "truncated"


def _not_gzip(d, _):
    f = d / "s00" / "s00_frame10.nii.gz"
    f.write_bytes(b"plain bytes, no gzip header" * 10)
    return f, "not a gzip file"


def _nan(d, cohort):
    f = d / "s02" / "s02_frame01.nii.gz"
    image = cohort["s02"].frames["ED"].image.copy()
    image[5, 5, 2] = np.nan
    nib.save(nib.Nifti1Image(image, cohort["s02"].affine), f)
    return f, "NaN or inf"


def _shape(d, cohort):
    f = d / "s01" / "s01_frame01_gt.nii.gz"
    f.unlink()
    save_nifti(f, np.zeros((96, 80, 5), np.uint8), cohort["s01"].affine, label=True)
    return f, "label shape (96, 80, 5) differs from image shape (96, 80, 6)"


def _label7(d, cohort):
    f = d / "s01" / "s01_frame10_gt.nii.gz"
    label = cohort["s01"].frames["ES"].label.copy()
    label[1, 1, 1] = 7
    nib.save(nib.Nifti1Image(label, cohort["s01"].affine), f)
    return f, "unexpected label values [7]"


def _empty(d, _):
    shutil.rmtree(d)
    d.mkdir()
    return d, "empty folder"


def _missing_cfg(d, _):
    f = d / "s04" / "Info.cfg"
    f.unlink()
    return f, "file not found"


def _garbage_cfg(d, _):
    f = d / "s04" / "Info.cfg"
    f.write_text("ED: one\nES: 10\n")
    return f, "ED must be a whole number"


def _huge(d, _):
    f = d / "s05" / "s05_frame01.nii.gz"
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((20000, 20000, 20000))
    f.write_bytes(gzip.compress(hdr.binaryblock + b"\x00" * 4))
    return f, "above the cap"


def _sheared(d, cohort):
    f = d / "s05" / "s05_frame10.nii.gz"
    affine = cohort["s05"].affine.copy()
    affine[0, 1] = 0.5
    nib.save(nib.Nifti1Image(cohort["s05"].frames["ES"].image, affine), f)
    return f, "non-orthogonal affine"


def _duplicate(d, _):
    (d / "training").mkdir()
    (d / "testing").mkdir()
    shutil.copytree(d / "s00", d / "testing" / "s00")
    shutil.move(d / "s00", d / "training" / "s00")
    return d / "testing" / "s00", "duplicate subject id 's00'"


def _unsafe(d, _):
    shutil.move(d / "s03", d / "s 03")
    return d / "s 03", "unsafe subject id"


def _partial_masks(d, _):
    for f in (d / "s02").glob("*_gt.nii.gz"):
        f.unlink()
    return d / "s02", "missing masks"


def _empty_mask(d, cohort):
    f = d / "s03" / "s03_frame01_gt.nii.gz"
    f.unlink()
    save_nifti(f, np.zeros((96, 80, 6), np.uint8), cohort["s03"].affine, label=True)
    return d / "s03", "ED label map is empty"


def _dicom(d, cohort, truncate):
    shutil.rmtree(d)
    files = write_dicom_series(cohort["s00"], d / "series")
    if truncate:
        files[4].write_bytes(files[4].read_bytes()[:-64])
        return files[4], "truncated pixel data"
    bad = d / "series" / "zz.dcm"
    bad.write_bytes(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + b"\x00" * 64)
    return bad, "not a DICOM file"


BAD_INPUTS = {
    "truncated": _truncate, "not_gzip": _not_gzip, "nan": _nan, "shape_mismatch": _shape, "label_7": _label7,
    "empty_folder": _empty, "missing_info_cfg": _missing_cfg, "garbage_info_cfg": _garbage_cfg,
    "huge_dims": _huge, "non_orthogonal": _sheared, "duplicate_ids": _duplicate, "unsafe_id": _unsafe,
    "missing_masks": _partial_masks, "empty_mask": _empty_mask,
    "dicom_no_preamble": lambda d, c: _dicom(d, c, truncate=False),
    "dicom_truncated_pixels": lambda d, c: _dicom(d, c, truncate=True),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_naming_the_file(cohort_dir, case, request):
    cohort = Cohort(request.getfixturevalue("tiny_cohort").subjects)
    named, words = BAD_INPUTS[case](cohort_dir, cohort)
    for args in ([str(cohort_dir)], [str(cohort_dir), "--json"]):
        result = CliRunner().invoke(inspect_command, args)
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output
        lines = result.stderr.splitlines()
        assert lines and all(line.startswith("error: ") for line in lines)
        assert any(line.startswith(f"error: {named}: ") and words in line for line in lines), lines
    assert any(words in problem for problem in json.loads(result.stdout)["problems"])
