import gzip
import shutil

import numpy as np
import pydicom
import pytest

from cmri_release.core.cohort import Cohort
from cmri_release.core.errors import InputError
from cmri_release.io import detect_layout, read_cohort, write_cohort
from dicom_series_writer import write_dicom_series
from cmri_release.io.nifti import save_nifti

IDENTIFIERS = {
    "PatientName": "DOE^JOHN", "PatientID": "ID12345", "PatientBirthDate": "19700101",
    "StudyDate": "20200101", "SeriesDate": "20200101", "InstitutionName": "Springfield General Hospital",
    "AccessionNumber": "ACC98765", "ReferringPhysicianName": "HOUSE^GREGORY",
}
PRIVATE = {(0x0011, 0x01): "SECRET-PRIVATE-TAG"}


def _series(root, subject, *, labels=True, **kw):
    files = write_dicom_series(subject, root, **kw)
    if labels:
        for phase in ("ED", "ES"):
            save_nifti(root / f"labels_{phase}.nii.gz", subject.frames[phase].label, subject.affine, label=True)
    return files


def _slope(files):
    return float(pydicom.dcmread(files[0], stop_before_pixels=True).RescaleSlope)


def _expect(path, words, *, named):
    with pytest.raises(InputError) as err:
        read_cohort(path)
    assert err.value.path == str(named), err.value
    assert words in err.value.problem, err.value
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("left_handed", [False, True])
@pytest.mark.parametrize("series_per_slice", [False, True])
def test_series_with_shuffled_names_reads_back(tmp_path, subject_factory, left_handed, series_per_slice):
    subject = subject_factory("orig", 1)
    if left_handed:  # slices numbered against the normal: the reader keeps the scanner's order
        subject.affine[:3, 2] *= -1
    files = _series(tmp_path / "scans" / "a", subject, shuffle_seed=7, series_per_slice=series_per_slice)
    (tmp_path / "scans" / "a" / "notes.txt").write_text("not dicom")
    (tmp_path / "scans" / "a" / "meta.json").write_text("{}")
    assert detect_layout(tmp_path / "scans") == "dicom"
    cohort = read_cohort(tmp_path / "scans")
    (read,) = cohort.subjects
    assert read.id == "dcm001" and read.vendor == "Siemens" and read.n_frames == 2
    np.testing.assert_allclose(read.affine, subject.affine, atol=1e-4)
    for phase in ("ED", "ES"):
        # 16-bit storage: each value within half a rescale step (plus the rounding of the printed intercept)
        np.testing.assert_allclose(read.frames[phase].image, subject.frames[phase].image, atol=_slope(files))
        np.testing.assert_array_equal(read.frames[phase].label, subject.frames[phase].label)
    assert {p: f.index for p, f in read.frames.items()} == {"ED": 1, "ES": 2}


def test_writer_follows_the_dicom_patient_convention(tmp_path, subject_factory):
    """RAS (NIfTI) x and y point the other way in LPS (DICOM): pins the geometry the reader inverts."""
    subject = subject_factory("a", 1, shape=(32, 24, 4))
    subject.affine = np.array([[1.5, 0, 0, 10.0], [0, 1.25, 0, 20.0], [0, 0, 8.0, 30.0], [0, 0, 0, 1]])
    files = write_dicom_series(subject, tmp_path)
    ds = pydicom.dcmread(files[2])  # frame 1, slice 2
    assert [float(v) for v in ds.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    assert [float(v) for v in ds.ImagePositionPatient] == [-10.0, -20.0, 30.0 + 2 * 8.0]
    assert [float(v) for v in ds.PixelSpacing] == [1.25, 1.5]  # between rows (y), between columns (x)
    assert (ds.Rows, ds.Columns) == (24, 32)  # rows run along y
    read = read_cohort(tmp_path).subjects[0]
    np.testing.assert_allclose(read.affine, subject.affine, atol=1e-6)
    np.testing.assert_allclose(read.frames["ES"].image, subject.frames["ES"].image, atol=_slope(files))


def test_one_series_per_slice_is_one_subject_and_ids_follow_uids_not_names(tmp_path, subject_factory):
    a, b = subject_factory("a", 1), subject_factory("b", 2)
    _series(tmp_path / "x" / "p1", a, labels=False, series_per_slice=True, tags={"PatientID": "P1"}, shuffle_seed=1)
    _series(tmp_path / "x" / "p2", b, labels=False, tags={"PatientID": "P2"}, shuffle_seed=2)
    for f in (tmp_path / "x" / "p2").iterdir():  # DICOM files need no suffix
        f.rename(f.with_suffix(""))
    first = read_cohort(tmp_path / "x")
    assert first.ids == ["dcm001", "dcm002"]
    assert not any(s.has_labels for s in first)
    # the same data under other folder names keeps its ids
    shutil.copytree(tmp_path / "x" / "p1", tmp_path / "y" / "zz")
    shutil.copytree(tmp_path / "x" / "p2", tmp_path / "y" / "aa")
    second = read_cohort(tmp_path / "y")
    for subject_id in first.ids:
        np.testing.assert_array_equal(first[subject_id].frames["ED"].image, second[subject_id].frames["ED"].image)
    matches_a = [s.id for s in first if np.allclose(s.frames["ED"].image, a.frames["ED"].image, atol=1)]
    assert len(matches_a) == 1


def _all_text(folder) -> bytes:
    blob = b""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            blob += gzip.decompress(data) if path.suffix == ".gz" else data
    return blob


def test_no_dicom_identifier_reaches_the_cohort_or_its_files(tmp_path, subject_factory):
    subject = subject_factory("orig", 3)
    files = _series(tmp_path / "scans", subject, tags=IDENTIFIERS, private=PRIVATE,
                    manufacturer="Philips Medical Systems", shuffle_seed=3)
    header = pydicom.dcmread(files[0])
    assert header.PatientName == "DOE^JOHN" and header[0x0011, 0x1001].value == "SECRET-PRIVATE-TAG"
    uids = {str(header.StudyInstanceUID), str(header.SeriesInstanceUID), str(header.SOPInstanceUID),
            str(header.FrameOfReferenceUID)}
    cohort = read_cohort(tmp_path / "scans")
    (read,) = cohort.subjects
    assert read.vendor == "Philips"
    metadata = repr((cohort.ids, read.extra, read.vendor, read.centre, read.group, read.height, read.weight))
    write_cohort(cohort, tmp_path / "out")
    written = _all_text(tmp_path / "out")
    secrets = [*IDENTIFIERS.values(), "DOE", "JOHN", "12345", "SECRET", *PRIVATE.values(), *uids]
    for secret in secrets:
        assert secret not in metadata, secret
        assert secret.encode() not in written, secret
    assert read.extra == {"source_format": "dicom"}


def test_no_preamble_dcm_is_refused(tmp_path, subject_factory):
    _series(tmp_path, subject_factory("a", 1), labels=False)
    bad = tmp_path / "raw.dcm"
    ds = pydicom.Dataset()
    ds.PatientName, ds.Rows = "X", 2
    ds.save_as(bad, implicit_vr=True, little_endian=True)
    _expect(tmp_path, "not a DICOM file", named=bad)


def test_truncated_pixel_data_is_refused(tmp_path, subject_factory):
    files = _series(tmp_path, subject_factory("a", 1), labels=False)
    files[3].write_bytes(files[3].read_bytes()[:-50])
    _expect(tmp_path, "truncated pixel data", named=files[3])


def _edit(path, **changes):
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def test_missing_position_is_refused(tmp_path, subject_factory):
    files = _series(tmp_path, subject_factory("a", 1), labels=False)
    _edit(files[2], ImagePositionPatient=None)
    _expect(tmp_path, "missing ImagePositionPatient", named=files[2])


def test_mixed_orientation_within_a_series_is_refused(tmp_path, subject_factory):
    files = _series(tmp_path, subject_factory("a", 1), labels=False)
    _edit(files[5], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    _expect(tmp_path, "mixed orientations", named=files[5])


def test_uneven_slice_spacing_is_refused(tmp_path, subject_factory):
    subject = subject_factory("a", 1)
    files = _series(tmp_path, subject, labels=False)
    normal_step = (np.diag([-1, -1, 1, 1]) @ subject.affine)[:3, 2]
    for path in files:  # move slice 2 (both frames) 3 mm along the normal
        ds = pydicom.dcmread(path)
        if (int(ds.InstanceNumber) - 1) % 4 == 2:
            position = np.array([float(v) for v in ds.ImagePositionPatient])
            _edit(path, ImagePositionPatient=[f"{v:.6f}" for v in position + 3 * normal_step / 8.0])
    _expect(tmp_path, "uneven slice spacing", named=tmp_path)


def test_label_beside_series_with_wrong_shape(tmp_path, subject_factory):
    subject = subject_factory("a", 1)
    _series(tmp_path, subject, labels=False)
    bad = tmp_path / "labels_ES.nii.gz"
    save_nifti(bad, np.zeros((32, 32, 3), np.uint8), subject.affine, label=True)
    _expect(tmp_path, "label shape (32, 32, 3) differs", named=bad)


def test_phases_cfg_beyond_the_cine(tmp_path, subject_factory):
    _series(tmp_path, subject_factory("a", 1), labels=False)
    (tmp_path / "phases.cfg").write_text("ED: 1\nES: 7\n")
    _expect(tmp_path, "beyond the series' 2 frames", named=tmp_path / "phases.cfg")


def test_read_dicom_cohort_is_writable_and_rereadable(tmp_path, subject_factory, same_subject):
    _series(tmp_path / "scans", subject_factory("a", 1))
    cohort = read_cohort(tmp_path / "scans")
    write_cohort(cohort, tmp_path / "out")
    same_subject(cohort.subjects[0], read_cohort(tmp_path / "out").subjects[0])
    assert isinstance(cohort, Cohort)
