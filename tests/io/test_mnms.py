import nibabel as nib
import numpy as np
import pytest

from cmri_release.core.cohort import Cohort
from cmri_release.core.errors import InputError
from cmri_release.io import detect_layout, read_cohort
from mnms_writer import write_mnms
from cmri_release.io.nifti import save_nifti
from cmri_release.core.labels import LV, MYO, RV, acdc_to_mnms

MNMS_HEADER = "External code,VendorName,Vendor,Centre,ED,ES,Pathology,Sex,Age,Height,Weight\n"


def structure_volumes_ml(subject):
    voxel_ml = abs(np.linalg.det(subject.affine[:3, :3])) / 1000.0
    return {phase: {name: float((frame.label == value).sum() * voxel_ml) for name, value in
                    (("RV", RV), ("MYO", MYO), ("LV", LV))} for phase, frame in subject.frames.items()}


def test_cohort_written_as_mnms_reads_back_with_the_same_structure_volumes(tmp_path, tiny_cohort, same_subject):
    csv_path = write_mnms(tiny_cohort, tmp_path)
    assert detect_layout(tmp_path) == "mnms"
    # on disk the ventricles are in M&Ms order: ACDC's LV (3) is stored as 1, RV (1) as 3
    first = tiny_cohort.subjects[0]
    on_disk = np.asanyarray(nib.load(tmp_path / "Training/Labeled/patient001/patient001_sa_gt.nii.gz").dataobj)
    assert on_disk.shape == (32, 32, 4, 2)
    assert np.all(on_disk[..., 0][first.frames["ED"].label == LV] == 1)
    assert np.all(on_disk[..., 0][first.frames["ED"].label == RV] == 3)
    back = read_cohort(tmp_path)
    assert back.ids == tiny_cohort.ids
    for a, b in zip(tiny_cohort, back):
        same_subject(a, b)
        for phase, volumes in structure_volumes_ml(a).items():
            assert structure_volumes_ml(b)[phase] == pytest.approx(volumes, rel=1e-5)
        assert all(v > 0 for phase in structure_volumes_ml(b).values() for v in phase.values())
        assert (b.vendor, b.centre, b.group, b.height, b.weight) == (a.vendor, a.centre, a.group, a.height, a.weight)
        assert {p: f.index for p, f in b.frames.items()} == {"ED": 1, "ES": 2}  # documented renumbering
    assert "Siemens" in csv_path.read_text()


def _mnms_subject(root, code, cine, labels, affine):
    folder = root / "Training" / "Labeled" / code
    folder.mkdir(parents=True)
    save_nifti(folder / f"{code}_sa.nii.gz", cine, affine)
    if labels is not None:
        save_nifti(folder / f"{code}_sa_gt.nii.gz", labels, affine, label=True)
    return folder


def _cine(subject, n_frames=5):
    """A 4D cine with the subject's ED at t=0 and ES at t=3 (0-based), others in between."""
    ed, es = subject.frames["ED"], subject.frames["ES"]
    images = [ed.image * (1 - w) + es.image * w for w in np.linspace(0, 1, 4)] + [ed.image]
    labels = np.zeros(ed.image.shape + (n_frames,), np.uint8)
    labels[..., 0], labels[..., 3] = acdc_to_mnms(ed.label, "t"), acdc_to_mnms(es.label, "t")
    return np.stack(images, axis=-1), labels


def test_real_mnms_csv_0_based_frames_and_vendor_letters(tmp_path, subject_factory):
    subject = subject_factory("A0S9V9", 4)
    cine, labels = _cine(subject)
    _mnms_subject(tmp_path, "A0S9V9", cine, labels, subject.affine)
    other = subject_factory("B1C2D3", 5)
    cine2, labels2 = _cine(other)
    _mnms_subject(tmp_path, "B1C2D3", cine2, labels2, other.affine)
    (tmp_path / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv").write_text(
        MNMS_HEADER + "A0S9V9,,A,1,0,3,HCM,M,67,180,82\nB1C2D3,,C,4,0,3,NOR,F,41,,\n")
    cohort = read_cohort(tmp_path)
    a = cohort["A0S9V9"]
    assert {p: f.index for p, f in a.frames.items()} == {"ED": 1, "ES": 4}  # 0-based 0 and 3, stored 1-based
    np.testing.assert_allclose(a.frames["ES"].image, cine[..., 3], atol=1e-5)
    np.testing.assert_array_equal(a.frames["ES"].label, subject.frames["ES"].label)
    np.testing.assert_array_equal(a.frames["ED"].label, subject.frames["ED"].label)
    assert (a.vendor, a.centre, a.group, a.height, a.weight, a.n_frames) == ("Siemens", "1", "HCM", 180.0, 82.0, 5)
    assert cohort["B1C2D3"].vendor == "GE" and cohort["B1C2D3"].height is None
    # age and sex are not carried anywhere
    assert "67" not in repr(a.extra) and a.extra == {}


def _bad_mnms(tmp_path, subject_factory, csv_text):
    subject = subject_factory("A0S9V9", 4)
    cine, labels = _cine(subject)
    _mnms_subject(tmp_path, "A0S9V9", cine, labels, subject.affine)
    csv_path = tmp_path / "info.csv"
    csv_path.write_text(csv_text)
    with pytest.raises(InputError) as err:
        read_cohort(tmp_path)
    return csv_path, err.value


def test_csv_missing_a_column_names_csv_and_column(tmp_path, subject_factory):
    csv_path, err = _bad_mnms(tmp_path, subject_factory, "External code,Vendor,ED\nA0S9V9,A,0\n")
    assert err.path == str(csv_path) and err.problem == "missing column 'ES'"


def test_frame_outside_the_cine(tmp_path, subject_factory):
    csv_path, err = _bad_mnms(tmp_path, subject_factory, MNMS_HEADER + "A0S9V9,,A,1,0,5,HCM,M,67,180,82\n")
    assert err.path == str(csv_path) and "ES 5 of 'A0S9V9' is outside the cine's 5 frames" in err.problem


def test_subject_without_csv_row(tmp_path, subject_factory):
    csv_path, err = _bad_mnms(tmp_path, subject_factory, MNMS_HEADER + "Z9Z9Z9,,A,1,0,3,HCM,M,67,180,82\n")
    assert err.path == str(tmp_path / "Training" / "Labeled" / "A0S9V9") and "no row in info.csv" in err.problem


def test_mnms_label_4_is_refused(tmp_path, subject_factory):
    subject = subject_factory("A0S9V9", 4)
    cine, labels = _cine(subject)
    labels[0, 0, 0, 3] = 4
    folder = tmp_path / "Training" / "Labeled" / "A0S9V9"
    folder.mkdir(parents=True)
    save_nifti(folder / "A0S9V9_sa.nii.gz", cine, subject.affine)
    nib.save(nib.Nifti1Image(labels, subject.affine), folder / "A0S9V9_sa_gt.nii.gz")
    (tmp_path / "info.csv").write_text(MNMS_HEADER + "A0S9V9,,A,1,0,3,HCM,M,67,180,82\n")
    with pytest.raises(InputError, match=r"A0S9V9_sa_gt.nii.gz: unexpected label values \[4\]"):
        read_cohort(tmp_path)


def _mnms2(root, subjects, header="SUBJECT_CODE,DISEASE,VENDOR,SCANNER,FIELD"):
    rows = [header]
    for number, subject in enumerate(subjects, start=1):
        code = f"{number:03d}"
        folder = root / "dataset" / code
        folder.mkdir(parents=True)
        for phase in ("ED", "ES"):
            frame = subject.frames[phase]
            save_nifti(folder / f"{code}_SA_{phase}.nii.gz", frame.image, subject.affine)
            save_nifti(folder / f"{code}_SA_{phase}_gt.nii.gz", acdc_to_mnms(frame.label, "t"), subject.affine,
                       label=True)
            save_nifti(folder / f"{code}_LA_{phase}.nii.gz", frame.image[..., :1], subject.affine)
        rows.append(f"{number},{'HCM' if number == 1 else 'NOR'},{'SIEMENS' if number == 1 else 'Philips'},"
                    f"Avanto,1.5")
    (root / "dataset_information.csv").write_text("\n".join(rows) + "\n")


def test_mnms2_layout(tmp_path, subject_factory, same_subject):
    subjects = [subject_factory("001", 6), subject_factory("002", 7)]
    _mnms2(tmp_path, subjects)
    assert detect_layout(tmp_path) == "mnms2"
    cohort = read_cohort(tmp_path)
    assert cohort.ids == ["001", "002"]
    for original, read in zip(subjects, cohort):
        same_subject(original, read)  # labels mapped back to ACDC order
    assert [s.vendor for s in cohort] == ["Siemens", "Philips"]
    assert [s.group for s in cohort] == ["HCM", "NOR"]
    assert cohort["001"].extra["frame_numbers"].startswith("not published")


def test_mnms2_header_case_insensitive_and_missing_column(tmp_path, subject_factory):
    _mnms2(tmp_path, [subject_factory("001", 6)], header="subject_code,disease,vendor,scanner,field")
    assert read_cohort(tmp_path).ids == ["001"]
    (tmp_path / "dataset_information.csv").write_text("SUBJECT_CODE,DISEASE\n1,HCM\n")
    with pytest.raises(InputError) as err:
        read_cohort(tmp_path)
    assert err.value.path == str(tmp_path / "dataset_information.csv")
    assert err.value.problem == "missing column 'VENDOR'"


def test_mnms_writer_puts_image_only_subjects_apart(tmp_path, subject_factory):
    cohort = Cohort([subject_factory("s1", 1), subject_factory("s2", 2, labelled=False)])
    write_mnms(cohort, tmp_path)
    assert (tmp_path / "Training/Unlabeled/s2/s2_sa.nii.gz").exists()
    assert not (tmp_path / "Training/Unlabeled/s2/s2_sa_gt.nii.gz").exists()
    back = read_cohort(tmp_path)
    assert back["s1"].has_labels and not back["s2"].has_labels


def test_mnms2_code_cannot_escape_the_dataset_folder(tmp_path, subject_factory):
    _mnms2(tmp_path, [subject_factory("001", 6)])
    csv_path = tmp_path / "dataset_information.csv"
    csv_path.write_text("SUBJECT_CODE,VENDOR\n../../etc,GE\n")
    with pytest.raises(InputError) as err:
        read_cohort(tmp_path)
    assert err.value.path == str(csv_path) and "unsafe subject id '../../etc'" in err.value.problem
