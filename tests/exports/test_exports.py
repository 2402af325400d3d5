"""nnU-Net, MONAI and DICOM SEG exports: written inside the atomic release, listed in the manifest, and read back
by each consumer's own conventions (nnU-Net's dataset checks, MONAI's LoadImaged, highdicom's SEG reader)."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmri_release.core.cohort import Cohort, Frame, Subject
from cmri_release.core.errors import CmriError
from cmri_release.export import check_formats, export_release, verify_manifest
from cmri_release.exports import SYNTHETIC_MARK
from cmri_release.exports.nnunet import DATASET
from cmri_release.spec import parse_spec

CHECKS = [{"name": "fidelity.clinical_index_distance", "estimate": 0.3, "threshold": 0.8, "op": "<=",
           "passed": True, "verdict": "pass"}]
FORMATS = ("nifti", "nnunet", "monai", "dicom-seg")


def subject(sid: str, vendor: str, seed: int) -> Subject:
    rng = np.random.default_rng(seed)
    shape = (20, 22, 3)  # x and y differ so that a transposed read shows
    x, y = np.meshgrid(np.arange(20), np.arange(22), indexing="ij")
    frames = {}
    for phase, index, r in (("ED", 1, 5.0 + seed % 2), ("ES", 9, 3.0)):
        label = np.zeros(shape, np.uint8)
        d = np.hypot(x - 10, y - 12)
        label[np.hypot(x - 10, y - 4) < 3] = 1
        label[d < r + 2] = 2
        label[d < r] = 3
        label[..., 2] = np.where(label[..., 2] == 3, 2, label[..., 2])  # the apex slice: no cavity
        image = np.choose(label, [40.0, 280.0, 90.0, 300.0]).astype(np.float32) + rng.normal(0, 8, shape)
        frames[phase] = Frame(phase, index, image.astype(np.float32), label)
    return Subject(sid, frames, np.diag([1.5, 1.25, 8.0, 1.0]), vendor=vendor, group="NOR", n_frames=20)


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> tuple[Path, Cohort]:
    tmp = tmp_path_factory.mktemp("rel")
    cohort = Cohort([subject(f"syn-{i:03d}", "AB"[i % 2], i) for i in range(3)], source="synthetic")
    spec = {"export": {"out": str(tmp / "rel"), "formats": list(FORMATS)}, "data": {}, "seed": 1}
    out = export_release(tmp / "rel", cohort, spec=spec, verdict="pass", checks=CHECKS, ledger=None, model_card={},
                         formats=FORMATS)
    return out, cohort


def test_every_format_is_written_and_listed_in_the_manifest(released):
    out, _ = released
    assert {p.name for p in out.iterdir()} == {"data", "dicom", "nnunet", "monai_datalist.json", "dicom-seg",
                                               "datasheet.html", "manifest.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["formats"] == {"nifti": "data/", "nnunet": ["nnunet/"], "monai": ["monai_datalist.json"],
                                   "dicom-seg": ["dicom-seg/"], "dicom": "dicom/"}
    listed = {e["path"] for e in manifest["files"]}
    for prefix in ("data/", "dicom/", f"nnunet/{DATASET}/imagesTr/", f"nnunet/{DATASET}/labelsTr/", "dicom-seg/"):
        assert any(p.startswith(prefix) for p in listed), prefix
    assert "monai_datalist.json" in listed and f"nnunet/{DATASET}/dataset.json" in listed
    assert verify_manifest(out) == []


def test_every_nifti_says_it_is_synthetic(released):
    out, _ = released
    files = sorted(out.rglob("*.nii.gz"))
    assert len(files) == 3 * 2 * 2 * 2  # data/ and nnunet/, images and labels, 2 phases, 3 subjects
    for path in files:
        assert nib.load(path).header["descrip"].item().decode() == SYNTHETIC_MARK


def test_nnunet_dataset_passes_nnunets_integrity_checks(released):
    """The checks of nnunetv2.experiment_planning.verify_dataset_integrity, written out (nnU-Net is not installed)."""
    out, cohort = released
    root = out / "nnunet" / DATASET
    meta = json.loads((root / "dataset.json").read_text())
    assert {"channel_names", "labels", "numTraining", "file_ending"} <= set(meta)
    assert meta["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert sorted(meta["labels"].values()) == list(range(len(meta["labels"])))  # consecutive from 0
    labels = sorted((root / "labelsTr").glob("*" + meta["file_ending"]))
    images = sorted((root / "imagesTr").glob("*" + meta["file_ending"]))
    assert meta["numTraining"] == len(labels) == 6 and len(images) == len(labels) * len(meta["channel_names"])
    by_id = {s.id: s for s in cohort}
    for label_path in labels:
        case = label_path.name[: -len(meta["file_ending"])]
        image = nib.load(root / "imagesTr" / f"{case}_0000{meta['file_ending']}")
        seg = nib.load(label_path)
        assert image.shape == seg.shape and np.allclose(image.header.get_zooms(), seg.header.get_zooms())
        assert np.allclose(image.affine, seg.affine)
        values = np.unique(np.asarray(seg.dataobj))
        assert set(values.tolist()) <= set(meta["labels"].values())
        assert np.isfinite(image.get_fdata()).all()
        sid, phase = case.rsplit("_", 1)
        assert np.array_equal(np.asarray(seg.dataobj), by_id[sid].frames[phase].label)


def test_monai_loads_the_datalist_with_loadimaged(released):
    out, cohort = released
    monai = pytest.importorskip("monai")
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    items = load_decathlon_datalist(str(out / "monai_datalist.json"), data_list_key="training")
    assert len(items) == 6 and all(Path(i["image"]).is_file() for i in items)
    load = LoadImaged(keys=["image", "label"], image_only=True)
    by_id = {s.id: s for s in cohort}
    for item in items:
        loaded = load(item)
        truth = by_id[item["subject"]].frames[item["phase"]]
        assert np.array_equal(np.asarray(loaded["label"]), truth.label)
        assert np.allclose(np.asarray(loaded["image"]), truth.image, atol=1e-4)
    assert monai.__version__


def test_monai_datalist_schema(released):
    """What MONAI's loader reads, checked without MONAI: relative paths, image/label keys, one item per frame."""
    out, _ = released
    doc = json.loads((out / "monai_datalist.json").read_text())
    assert doc["numTraining"] == len(doc["training"]) == 6
    for item in doc["training"]:
        assert {"image", "label", "subject", "phase"} <= set(item)
        assert not Path(item["image"]).is_absolute() and (out / item["label"]).is_file()


def test_dicom_seg_reads_back_with_highdicom(released):
    out, cohort = released
    hd = pytest.importorskip("highdicom")
    import pydicom

    for s in cohort:
        for phase in ("ED", "ES"):
            seg = hd.seg.segread(out / "dicom-seg" / s.id / f"SEG_{phase}.dcm")
            assert [d.segment_label for d in seg.SegmentSequence] == ["RV", "MYO", "LV"]
            assert seg.SegmentationType == "BINARY"
            sources = sorted((out / "dicom" / s.id).glob(f"IM_{phase}_*.dcm"))
            uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in sources]
            pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                                       skip_overlap_checks=True)
            truth = s.frames[phase].label.transpose(2, 1, 0)
            assert np.array_equal(pixels, truth)


def test_formats_are_checked(tmp_path):
    assert check_formats(["nifti", "dicom-seg"]) == ("nifti", "dicom-seg", "dicom")
    with pytest.raises(CmriError, match="must include 'nifti'"):
        check_formats(["nnunet"])
    with pytest.raises(CmriError, match="parquet"):
        check_formats(["nifti", "parquet"])
    spec = parse_spec('[data]\nphantom = {subjects = 12, seed = 1}\n[export]\nformats = ["nifti", "nnunet", '
                      '"monai", "dicom", "dicom-seg"]\n', base_dir=tmp_path)
    assert set(spec.export.formats) == {"nifti", "nnunet", "monai", "dicom", "dicom-seg"}


def test_dicom_seg_without_highdicom_says_how_to_install(monkeypatch):
    import builtins

    from cmri_release.exports import dicom_seg

    real_import = builtins.__import__

    def no_highdicom(name, *args, **kwargs):
        if name == "highdicom":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_highdicom)
    with pytest.raises(CmriError, match=r"cmri-release\[dicom-seg\]"):
        dicom_seg._highdicom()
