"""Atomic export: a release appears whole or not at all; the manifest verifies and catches tampering."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from auditors.base import Figure
from cmri_release import export
from cmri_release.core import fs
from cmri_release.core.cohort import Cohort, Frame, Subject
from cmri_release.core.errors import CmriError, InputError
from cmri_release.export import export_release, verify_manifest
from cmri_release.io import read_cohort

CHECKS = [
    {"name": "privacy.near_copy_rate", "value": 0.0, "threshold": 0.02, "op": "<=", "passed": True,
     "description": "synthetic patients copying a training patient", "details": ""},
    {"name": "fidelity.mask_dice_ratio", "value": 0.93, "threshold": 0.8, "op": ">=", "passed": True,
     "description": "structures where the mask says", "details": ""},
]
LEDGER = {"dp": False, "unit": "patient"}
CARD = {"generator": "flow", "training_data": {"subjects_sha256": "ab" * 32, "n_subjects": 6}, "epochs": 2,
        "checksums": {"weights.pt": "00"}}


def subject(sid: str, vendor: str, seed: int) -> Subject:
    rng = np.random.default_rng(seed)
    shape = (24, 24, 3)
    x, y = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
    d = np.hypot(x - 12, y - 12)
    frames = {}
    for phase, index, r in (("ED", 1, 6.0), ("ES", 9, 4.0)):
        label = np.zeros(shape, np.uint8)
        label[np.hypot(x - 12, y - 12 + 2 * r) < r] = 1
        label[d < r + 2] = 2
        label[d < r] = 3
        image = np.choose(label, [40.0, 280.0, 90.0, 300.0]).astype(np.float32) + rng.normal(0, 8, shape)
        frames[phase] = Frame(phase, index, image.astype(np.float32), label)
    return Subject(sid, frames, np.diag([1.5, 1.5, 8.0, 1.0]), vendor=vendor, group="NOR", n_frames=20)


@pytest.fixture
def cohort() -> Cohort:
    return Cohort([subject(f"syn-7-{i:04d}", "AB"[i % 2], i) for i in range(1, 4)], source="synthetic")


def spec_dict(tmp_path, formats=("nifti", "dicom")):
    return {"data": {"size": 32, "train": str(tmp_path / "hospital" / "cohorts" / "train"), "holdout": None},
            "synthesis": {"masks": "generated"}, "export": {"out": str(tmp_path / "rel"), "formats": list(formats)},
            "seed": 7}


def release(tmp_path, cohort, **kw):
    args = dict(spec=spec_dict(tmp_path), verdict="pass", checks=CHECKS, ledger=LEDGER, model_card=CARD,
                formats=("nifti", "dicom"), seeds={"run": 7})
    args.update(kw)
    return export_release(tmp_path / "rel", cohort, **args)


def leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))


def test_release_folder_is_complete_and_verifies(tmp_path, cohort):
    out = release(tmp_path, cohort)
    assert out == tmp_path / "rel" and leftovers(tmp_path) == []
    assert sorted(p.name for p in out.iterdir()) == ["data", "datasheet.html", "dicom", "manifest.json"]
    back = read_cohort(out / "data")
    assert back.ids == cohort.ids
    np.testing.assert_allclose(back["syn-7-0002"].frames["ES"].image, cohort["syn-7-0002"].frames["ES"].image)
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {e["path"] for e in manifest["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk and "datasheet.html" in listed and any(p.startswith("dicom/") for p in listed)
    assert manifest["verdict"] == "pass" and manifest["checks"] == CHECKS
    assert manifest["privacy_ledger"] == LEDGER and manifest["seeds"] == {"run": 7}
    assert manifest["packages"]["torch"] and manifest["packages"]["pydicom"]
    assert manifest["totals"]["files"] == len(listed)
    # The public manifest names input folders, never their full path (it may name a site or a person).
    assert manifest["spec"]["data"]["train"] == "train" and str(tmp_path) not in json.dumps(manifest["spec"])
    assert verify_manifest(out) == []


def test_tampering_is_detected(tmp_path, cohort):
    out = release(tmp_path, cohort)
    nifti = sorted((out / "data").rglob("*_gt.nii.gz"))[0]
    blob = bytearray(nifti.read_bytes())
    blob[-5] ^= 0xFF
    nifti.write_bytes(bytes(blob))
    (out / "data" / "extra.txt").write_text("smuggled")
    dicom = sorted((out / "dicom").rglob("*.dcm"))[0]
    dicom.unlink()
    (out / "datasheet.html").write_text("<html>replaced</html>")
    problems = verify_manifest(out)
    rel = lambda p: p.relative_to(out).as_posix()  # noqa: E731
    assert f"{rel(nifti)}: sha256 differs from the manifest (modified)" in problems
    assert "data/extra.txt: not in the manifest (added)" in problems
    assert f"{rel(dicom)}: missing" in problems
    assert any(p.startswith("datasheet.html: size") for p in problems)
    assert len(problems) == 4


def test_manifest_with_unsafe_path_or_missing_is_refused(tmp_path, cohort):
    out = release(tmp_path, cohort)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"].append({"path": "../outside.txt", "sha256": "0" * 64, "bytes": 1})
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "unsafe path in manifest: '../outside.txt'" in verify_manifest(out)
    (out / "manifest.json").unlink()
    with pytest.raises(InputError, match="no manifest"):
        verify_manifest(out)


@pytest.mark.parametrize("target,error", [
    ("write_cohort", OSError), ("write_dicom_release", OSError), ("render_datasheet", RuntimeError),
    ("fsync_tree", OSError), ("rename", OSError), ("write_dicom_release", KeyboardInterrupt),
])
def test_a_crash_at_any_stage_leaves_nothing(tmp_path, cohort, monkeypatch, target, error):
    real = {"write_dicom_release": export.write_dicom_release, "write_cohort": export.write_cohort}
    seen = {}

    def boom(*args, **kwargs):
        if target in real:  # write part of the output first, so that there is something to clean up
            real[target](Cohort(cohort.subjects[:1]), args[1])
            seen["partial"] = any(args[1].rglob("*"))
        raise error("injected failure")

    if target == "rename":
        monkeypatch.setattr(fs.os, "rename", boom)
    elif target == "fsync_tree":
        monkeypatch.setattr(fs, target, boom)
    else:
        monkeypatch.setattr(export, target, boom)
    with pytest.raises(error, match="injected failure"):
        release(tmp_path, cohort)
    assert not (tmp_path / "rel").exists()
    assert leftovers(tmp_path) == []
    if target in real:
        assert seen["partial"]


def test_existing_target_is_never_overwritten(tmp_path, cohort):
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "keep.txt").write_text("mine")
    with pytest.raises(CmriError, match="already exists"):
        release(tmp_path, cohort)
    assert (tmp_path / "rel" / "keep.txt").read_text() == "mine"
    (tmp_path / "rel" / "keep.txt").unlink()  # even an empty folder (which rename would replace) is refused
    with pytest.raises(CmriError, match="already exists"):
        release(tmp_path, cohort)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("verdict,checks", [
    ("fail", CHECKS), ("pass", []), ("pass", [dict(CHECKS[0], passed=False)] + CHECKS[1:]),
])
def test_nothing_is_exported_without_a_pass(tmp_path, cohort, verdict, checks):
    with pytest.raises(CmriError, match="refusing to export"):
        release(tmp_path, cohort, verdict=verdict, checks=checks)
    assert list(tmp_path.iterdir()) == []


def test_formats_must_include_nifti(tmp_path, cohort):
    with pytest.raises(CmriError, match="must include 'nifti'"):
        release(tmp_path, cohort, formats=("dicom",))
    out = release(tmp_path, cohort, formats=("nifti",))
    assert not (out / "dicom").exists() and verify_manifest(out) == []


def test_datasheet_is_public_escaped_and_self_contained(tmp_path, cohort):
    cohort.subjects[0].vendor = "<script>alert('x')</script>"
    private_png = b"\x89PNG-real-patient-pixels"
    public_png = b"\x89PNG-synthetic-histogram"
    figures = [Figure("nn_pairs", "Nearest real/synthetic pairs", private_png, public=False),
               Figure("hist", "Intensity histogram", public_png, public=True),
               Figure("unflagged", "Unflagged", b"\x89PNG-unknown", public=None)]
    out = release(tmp_path, cohort, figures=figures)
    html = (out / "datasheet.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert base64.b64encode(public_png).decode() in html
    assert base64.b64encode(private_png).decode() not in html
    assert base64.b64encode(b"\x89PNG-unknown").decode() not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    for section in ("Motivation", "Composition", "Collection process", "Preprocessing", "Uses", "Distribution",
                    "Maintenance", "model card", "Privacy ledger", "Release checks", "Synthetic samples"):
        assert section in html
    assert "without differential privacy" in html and "fidelity.mask_dice_ratio" in html
    assert "weights.pt" not in html  # checksums are for the manifest, not the reader
