import shutil

import nibabel as nib
import numpy as np
import pytest

from cmri_release.core.cohort import Cohort
from cmri_release.core.errors import InputError
from cmri_release.io import detect_layout, read_cohort, write_cohort
from cmri_release.io.infocfg import read_info_cfg
from cmri_release.io.nifti import save_nifti


def _expect(path, words, *, named):
    with pytest.raises(InputError) as err:
        read_cohort(path)
    assert err.value.path == str(named), err.value
    assert words in err.value.problem, err.value
    return err.value


def test_cohort_layout_round_trip(tmp_path, tiny_cohort, same_subject):
    write_cohort(tiny_cohort, tmp_path / "c")
    folder = tmp_path / "c" / "patient001"
    assert sorted(p.name for p in folder.iterdir()) == [
        "Info.cfg", "patient001_frame01.nii.gz", "patient001_frame01_gt.nii.gz",
        "patient001_frame09.nii.gz", "patient001_frame09_gt.nii.gz"]
    assert (folder / "Info.cfg").read_text() == (
        "ED: 1\nES: 9\nGroup: DCM\nHeight: 172.0\nNbFrame: 25\nWeight: 70.5\nVendor: Siemens\nCentre: C1\n")
    assert detect_layout(tmp_path / "c") == "cohort"
    back = read_cohort(tmp_path / "c")
    assert back.ids == tiny_cohort.ids
    for a, b in zip(tiny_cohort, back):
        same_subject(a, b)
        assert (b.vendor, b.centre, b.group, b.height, b.weight, b.n_frames) == (
            a.vendor, a.centre, a.group, a.height, a.weight, a.n_frames)
        assert {p: f.index for p, f in b.frames.items()} == {"ED": 1, "ES": 9}
        # orientation: the world direction of every voxel axis survives
        np.testing.assert_allclose(b.affine[:3, :3] / b.spacing, a.affine[:3, :3] / a.spacing, atol=1e-5)
    assert nib.aff2axcodes(back.subjects[0].affine) == nib.aff2axcodes(tiny_cohort.subjects[0].affine)


def test_image_only_subject_round_trips_without_labels(tmp_path, subject_factory, same_subject):
    cohort = Cohort([subject_factory("s1", 3, labelled=False)])
    write_cohort(cohort, tmp_path)
    assert not list(tmp_path.glob("s1/*_gt.nii.gz"))
    back = read_cohort(tmp_path)
    same_subject(cohort.subjects[0], back.subjects[0])
    assert not back.subjects[0].has_labels


def test_writer_refuses_to_overwrite(tmp_path, tiny_cohort):
    write_cohort(tiny_cohort, tmp_path)
    with pytest.raises(InputError, match="already exists"):
        write_cohort(tiny_cohort, tmp_path)


def _acdc_patient(folder, cohort_subject):
    """A patient folder as ACDC distributes it: no Vendor/Centre, a 4D cine beside the frames."""
    write_cohort(Cohort([cohort_subject]), folder.parent)
    (folder / "Info.cfg").write_text("ED: 1\nES: 9\nGroup: DCM\nHeight: 184.0\nNbFrame: 25\nWeight: 95.0\n")
    cine = np.stack([cohort_subject.frames["ED"].image] * 3, axis=-1)
    save_nifti(folder / f"{folder.name}_4d.nii.gz", cine, cohort_subject.affine)


def test_real_acdc_database_layout(tmp_path, subject_factory, same_subject):
    a, b = subject_factory("patient001", 1), subject_factory("patient101", 2)
    _acdc_patient(tmp_path / "database" / "training" / "patient001", a)
    _acdc_patient(tmp_path / "database" / "testing" / "patient101", b)
    for root in (tmp_path, tmp_path / "database"):
        assert detect_layout(root) == "acdc"
        cohort = read_cohort(root)
        assert cohort.ids == ["patient001", "patient101"]
        same_subject(a, cohort["patient001"])
        assert cohort["patient001"].vendor == "unknown" and cohort["patient001"].centre == "unknown"
        assert cohort["patient001"].height == 184.0
    # a folder of patientNNN folders (training/ alone) is the cohort layout
    assert detect_layout(tmp_path / "database" / "training") == "cohort"
    assert read_cohort(tmp_path / "database" / "training").ids == ["patient001"]


def test_duplicate_ids_across_acdc_splits(tmp_path, subject_factory):
    _acdc_patient(tmp_path / "training" / "patient001", subject_factory("patient001", 1))
    _acdc_patient(tmp_path / "testing" / "patient001", subject_factory("patient001", 2))
    err = _expect(tmp_path, "duplicate subject id 'patient001'", named=tmp_path / "testing" / "patient001")
    assert str(tmp_path / "training" / "patient001") in err.problem


def test_empty_folder(tmp_path):
    _expect(tmp_path, "empty folder", named=tmp_path)


def test_missing_folder(tmp_path):
    _expect(tmp_path / "nope", "no such file", named=tmp_path / "nope")


def test_missing_info_cfg(tmp_path, tiny_cohort):
    write_cohort(tiny_cohort, tmp_path)
    (tmp_path / "patient002" / "Info.cfg").unlink()
    _expect(tmp_path, "file not found", named=tmp_path / "patient002" / "Info.cfg")


@pytest.mark.parametrize("text, words", [
    ("ED: 1\nES: twelve\n", "ES must be a whole number"),
    ("ED: 1\n", "missing required key 'ES'"),
    ("\x00\xff\xfe garbage", "not a text file"),
    ("ED 1\nES: 9\n", "line 1 is not 'Key: value'"),
    ("ED: 1\nES: 9\nPatientName: DOE^JOHN\n", "unknown key 'PatientName'"),
    ("ED: 1\nES: 9\nHeight: nan\n", "Height must be a positive number"),
    ("ED: 1\nES: 30\nNbFrame: 25\n", "beyond NbFrame"),
    ("ED: 1\nES: 1\n", "same frame"),
])
def test_garbage_info_cfg(tmp_path, tiny_cohort, text, words):
    write_cohort(tiny_cohort, tmp_path)
    cfg = tmp_path / "patient001" / "Info.cfg"
    cfg.write_bytes(text.encode("latin-1"))
    _expect(tmp_path, words, named=cfg)


def test_missing_frame_named_by_info_cfg(tmp_path, tiny_cohort):
    write_cohort(tiny_cohort, tmp_path)
    (tmp_path / "patient001" / "Info.cfg").write_text("ED: 1\nES: 12\n")
    _expect(tmp_path, "missing ES image", named=tmp_path / "patient001" / "patient001_frame12.nii.gz")


def test_image_label_shape_mismatch(tmp_path, tiny_cohort):
    write_cohort(tiny_cohort, tmp_path)
    gt = tmp_path / "patient001" / "patient001_frame09_gt.nii.gz"
    gt.unlink()
    save_nifti(gt, np.zeros((32, 30, 4), np.uint8), tiny_cohort.subjects[0].affine, label=True)
    _expect(tmp_path, "label shape (32, 30, 4) differs from image shape (32, 32, 4)", named=gt)


def test_image_label_spacing_mismatch(tmp_path, tiny_cohort):
    write_cohort(tiny_cohort, tmp_path)
    gt = tmp_path / "patient001" / "patient001_frame01_gt.nii.gz"
    affine = tiny_cohort.subjects[0].affine.copy()
    affine[:3, 2] *= 1.25
    gt.unlink()
    save_nifti(gt, tiny_cohort.subjects[0].frames["ED"].label, affine, label=True)
    _expect(tmp_path, "spacing", named=gt)


def test_label_7(tmp_path, tiny_cohort):
    write_cohort(tiny_cohort, tmp_path)
    gt = tmp_path / "patient002" / "patient002_frame01_gt.nii.gz"
    label = tiny_cohort.subjects[1].frames["ED"].label.copy()
    label[0, 0, 0] = 7
    img = nib.Nifti1Image(label, tiny_cohort.subjects[1].affine)
    nib.save(img, gt)
    _expect(tmp_path, "unexpected label values [7]", named=gt)


def test_truncated_frame_through_the_reader(tmp_path, tiny_cohort):
    write_cohort(tiny_cohort, tmp_path)
    image = tmp_path / "patient002" / "patient002_frame09.nii.gz"
    image.write_bytes(image.read_bytes()[:300])
    _expect(tmp_path, "truncated", named=image)


def test_unsafe_folder_name(tmp_path, tiny_cohort):
    write_cohort(tiny_cohort, tmp_path)
    shutil.move(tmp_path / "patient002", tmp_path / "bad id")
    _expect(tmp_path, "unsafe subject id 'bad id'", named=tmp_path / "bad id")


def test_info_cfg_round_trip_keeps_types(tmp_path):
    cfg = tmp_path / "Info.cfg"
    cfg.write_text("ED: 1\nES: 12\nGroup: HCM\nHeight: 160\nNbFrame: 30\nWeight: 55.5\n")
    info = read_info_cfg(cfg)
    assert (info.ed, info.es, info.group, info.height, info.n_frames, info.weight) == (1, 12, "HCM", 160.0, 30, 55.5)
    assert info.vendor == "unknown" and info.centre == "unknown"


def test_ids_differing_only_in_case_are_duplicates(tmp_path, subject_factory):
    write_cohort(Cohort([subject_factory("P1", 1), subject_factory("p1", 2)]), tmp_path)
    _expect(tmp_path, "duplicate subject id 'p1'", named=tmp_path / "p1")
