"""The release's DICOM export: valid MR Image Storage, right geometry and intensities, nothing from any source."""
from __future__ import annotations

import re

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID, MRImageStorage

from cmri_release.core.cohort import Cohort, Frame, Subject
from cmri_release.dicom_export import write_dicom_release
from cmri_release.io import read_cohort
from dicom_series_writer import write_dicom_series

# A value longer than its VR allows is a pydicom warning: treat it as the bug it is.
pytestmark = pytest.mark.filterwarnings("error::UserWarning")

SOURCE_IDENTIFIERS = {
    "PatientName": "DOE^JOHN", "PatientID": "ID12345", "PatientBirthDate": "19700101", "StudyDate": "20200101",
    "InstitutionName": "Springfield General Hospital", "AccessionNumber": "ACC98765",
    "ReferringPhysicianName": "HOUSE^GREGORY", "StationName": "MRI-SCANNER-7",
}
ALLOWED = {
    "SOPClassUID", "SOPInstanceUID", "ImageType", "Modality", "Manufacturer", "ManufacturerModelName",
    "SoftwareVersions", "ContentQualification", "BodyPartExamined", "PatientName", "PatientID", "PatientBirthDate",
    "PatientSex", "PatientIdentityRemoved", "DeidentificationMethod", "BurnedInAnnotation",
    "RecognizableVisualFeatures", "LongitudinalTemporalInformationModified", "StudyInstanceUID", "SeriesInstanceUID",
    "FrameOfReferenceUID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
    "StudyDescription", "SeriesNumber", "SeriesDescription", "PositionReferenceIndicator", "ScanningSequence",
    "SequenceVariant", "ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength", "NumberOfTemporalPositions",
    "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "RescaleType", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "RescaleSlope", "RescaleIntercept", "InstanceNumber", "TemporalPositionIdentifier", "ImagePositionPatient",
    "SliceLocation", "ImageComments", "Rows", "Columns", "WindowCenter", "WindowWidth", "PixelData",
}


def ring_subject(subject_id, vendor="A", shape=(32, 32, 4), spacing=(1.5, 1.5, 8.0), seed=0) -> Subject:
    """LV cavity in a myocardial ring beside an RV blob, with noisy scanner-like intensities."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    d = np.hypot(x - shape[0] / 2, y - shape[1] / 2)
    frames = {}
    for phase, index, r in (("ED", 1, 7.0), ("ES", 10, 5.0)):
        label = np.zeros(shape, np.uint8)
        label[np.hypot(x - shape[0] / 2, y - shape[1] / 2 + 2 * r) < r] = 1
        label[d < r + 3] = 2
        label[d < r] = 3
        image = np.choose(label, [40.0, 280.0, 90.0, 300.0]).astype(np.float32)
        image += rng.normal(0, 10, shape).astype(np.float32)
        frames[phase] = Frame(phase, index, image, label)
    return Subject(id=subject_id, frames=frames, affine=np.diag([*spacing, 1.0]), vendor=vendor, group="NOR")


def oblique_subject(subject_id="syn-0-0001") -> Subject:
    """A ring subject on a rotated, anisotropic grid (short-axis planes are oblique in the scanner)."""
    s = ring_subject(subject_id, vendor="Philips", shape=(40, 36, 5), spacing=(1.4, 1.6, 8.0), seed=3)
    angle = np.deg2rad(30)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle) * 0.6, np.cos(angle) * 0.6, -0.8],
                    [np.sin(angle) * 0.8, np.cos(angle) * 0.8, 0.6]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.4, 1.6, 8.0])
    affine[:3, 3] = [-20.5, 33.0, 101.25]
    s.affine = affine
    return s


def read_all(folder):
    return [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]


def test_files_are_deidentified_mr_images(tmp_path):
    cohort = Cohort([oblique_subject("syn-0-0001"), oblique_subject("syn-0-0002")])
    files = write_dicom_release(cohort, tmp_path / "dicom")
    assert len(files) == 2 * 2 * 5  # subjects x phases x slices
    datasets = read_all(tmp_path / "dicom")
    uids = set()
    for ds in datasets:
        assert ds.SOPClassUID == MRImageStorage and ds.file_meta.MediaStorageSOPClassUID == MRImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod
        assert ds.BurnedInAnnotation == "NO" and ds.Manufacturer == "cmri-release"
        assert str(ds.PatientName) == ds.PatientID and ds.PatientID.startswith("syn-0-000")
        assert "SYNTHETIC" in ds.ImageComments
        assert {e.keyword for e in ds} <= ALLOWED
        assert not any(e.tag.is_private for e in ds)
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            assert UID(ds[key].value).is_valid
        assert UID(ds.SOPInstanceUID).is_valid
        uids.add(ds.SOPInstanceUID)
    assert len(uids) == len(datasets)
    studies = {(ds.PatientID, ds.StudyInstanceUID) for ds in datasets}
    assert len(studies) == 2  # one study per synthetic subject


def test_geometry_and_intensities_match_the_volume(tmp_path):
    subject = oblique_subject()
    write_dicom_release(Cohort([subject]), tmp_path / "dicom")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ subject.affine
    for ds in read_all(tmp_path / "dicom"):
        phase = "ED" if ds.TemporalPositionIdentifier == 1 else "ES"
        z = (int(ds.InstanceNumber) - 1) % 5
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        # DICOM PS3.3 C.7.6.2.1.1: P = S + X * dc * c + Y * dr * r for column c, row r.
        for r, c in ((0, 0), (7, 3), (35, 39)):
            dicom_world = ipp + iop[:3] * dc * c + iop[3:] * dr * r
            nifti_world = (lps @ np.array([c, r, z, 1.0]))[:3]  # column = x, row = y
            np.testing.assert_allclose(dicom_world, nifti_world, atol=1e-6)
        assert float(ds.SliceThickness) == pytest.approx(8.0)
        values = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        expected = subject.frames[phase].image[:, :, z].T
        np.testing.assert_allclose(values, expected, atol=float(ds.RescaleSlope) * 0.5 + 1e-4)


def test_the_project_reader_reads_the_export_back(tmp_path):
    subject = oblique_subject()
    write_dicom_release(Cohort([subject]), tmp_path / "dicom")
    back = read_cohort(tmp_path / "dicom")
    assert len(back) == 1
    got = back.subjects[0]
    np.testing.assert_allclose(got.affine, subject.affine, atol=1e-6)
    for phase in ("ED", "ES"):
        slope = float(pydicom.dcmread(next((tmp_path / "dicom").rglob("*.dcm"))).RescaleSlope)
        np.testing.assert_allclose(got.frames[phase].image, subject.frames[phase].image, atol=slope)


def test_nothing_from_a_source_dicom_reaches_the_export(tmp_path):
    # A "real" scan full of identifiers, read by the project's reader, then exported.
    source = ring_subject("src", shape=(32, 32, 4), seed=1)
    files = write_dicom_series(source, tmp_path / "scan", tags=SOURCE_IDENTIFIERS,
                               private={(0x0011, 0x01): "SECRET-PRIVATE-TAG"}, manufacturer="SIEMENS")
    source_uids = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        source_uids |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID}
    cohort = read_cohort(tmp_path / "scan")
    cohort.subjects[0].extra["note"] = "DOE^JOHN"  # a careless reader's leftovers must not travel either
    cohort.subjects[0].centre = "Springfield General Hospital"
    write_dicom_release(cohort, tmp_path / "export")
    secrets = [*SOURCE_IDENTIFIERS.values(), "DOE", "JOHN", "12345", "SECRET", "Springfield", "SIEMENS",
               *source_uids]
    exported = list((tmp_path / "export").rglob("*"))
    assert any(p.suffix == ".dcm" for p in exported)
    for path in exported:
        if path.is_file():
            blob = path.read_bytes()
            for secret in secrets:
                assert not _contains(blob, secret), f"{secret!r} leaked into {path.name}"


def _contains(blob: bytes, secret: str) -> bool:
    """Whether the secret is in the file. A bare number counts only as a whole number: the export's own fresh
    UIDs are long random decimals, and a five-digit run inside one of them is chance (CI hit it once), not a leak."""
    if secret.isdigit():
        return re.search(rb"(?<![0-9])" + secret.encode() + rb"(?![0-9])", blob) is not None
    return secret.encode() in blob


def test_two_exports_share_no_uid(tmp_path):
    cohort = Cohort([oblique_subject()])
    write_dicom_release(cohort, tmp_path / "a")
    write_dicom_release(cohort, tmp_path / "b")

    def uids(folder):
        return {ds[k].value for ds in read_all(folder)
                for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")}

    assert not uids(tmp_path / "a") & uids(tmp_path / "b")


def test_a_constant_volume_still_exports(tmp_path):
    subject = oblique_subject()
    for frame in subject.frames.values():
        frame.image[:] = 7.5
    write_dicom_release(Cohort([subject]), tmp_path / "dicom")
    ds = read_all(tmp_path / "dicom")[0]
    values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(values, 7.5)
