"""The Python API: SliceSets from arrays in one call, cohorts from folders, audit() and release() end to end."""
import json

import numpy as np
import pytest

from cmri_release import api
from cmri_release.core.sliceset import SliceSet


def arrays(n_patients: int, seed: int, size: int = 16):
    """Per patient 3 ED and 3 ES slices of a disc heart; (images, labels, ids, phases)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels, ids, phases = [], [], [], []
    for p in range(n_patients):
        r = rng.uniform(3, 5)
        for phase, k in (("ED", 1.0), ("ES", 0.7)):
            for z in range(3):
                d = np.hypot(yy - size / 2, xx - size / 2)
                lab = np.where(d < r * k, 3, np.where(d < r * k + 1.5, 2, 0)).astype(np.uint8)
                lab[1:3, 1:3 + z] = 1
                images.append(np.clip(np.choose(lab, [0.1, 0.8, 0.3, 0.9]) + rng.normal(0, 0.05, lab.shape), 0, 1))
                labels.append(lab), ids.append(f"p{seed}-{p}"), phases.append(phase)
    return np.stack(images), np.stack(labels), ids, phases


def test_slices_from_arrays_fills_the_rest():
    images, labels, ids, phases = arrays(2, 0)
    s = api.slices_from_arrays(images, labels, subject_ids=ids, phases=phases, vendors="Siemens", thickness_mm=8.0,
                               groups={"p0-0": "NOR", "p0-1": "DCM"})
    assert isinstance(s, SliceSet) and len(s) == 12 and s.subjects == ["p0-0", "p0-1"]
    assert s.slice_index.tolist() == [0, 1, 2] * 4
    assert s.slice_pos.tolist() == [0.0, 0.5, 1.0] * 4
    assert set(s.vendors.tolist()) == {"Siemens"} and s.has_label.all()
    assert s.subject_meta == {"p0-0": {"thickness_mm": 8.0, "group": "NOR"},
                              "p0-1": {"thickness_mm": 8.0, "group": "DCM"}}
    from auditors.fidelity.clinical_indices import slice_indices

    found, skipped = slice_indices(s)
    assert not skipped and found["p0-0"]["lv_edv_ml"] > found["p0-0"]["lv_esv_ml"] > 0


def test_slices_from_arrays_refuses_fields_of_the_wrong_length():
    images, labels, ids, _ = arrays(1, 0)
    with pytest.raises(ValueError, match="vendors: give one value or one per slice"):
        api.slices_from_arrays(images, labels, subject_ids=ids, vendors=["A", "B"])
    unlabelled = api.slices_from_arrays(images, subject_ids=ids)
    assert not unlabelled.has_label.any()


def test_load_slices_reads_a_folder(tmp_path):
    from cmri_release.io import write_cohort
    from cmri_release.phantom import make_phantom

    write_cohort(make_phantom(2, seed=8), tmp_path / "c")
    cohort = api.load_cohort(tmp_path / "c")
    slices = api.load_slices(tmp_path / "c", size=32)
    assert len(cohort) == 2 and slices.size == 32 and len(slices.subjects) == 2


def test_audit_returns_the_typed_report_and_writes_its_files(tmp_path):
    """From numpy arrays to an audit report in three calls (the walkthrough of docs/api.md)."""
    from cmri_release.audit import AuditReport

    def make(n, seed):
        images, labels, ids, phases = arrays(n, seed)
        return api.slices_from_arrays(images, labels, subject_ids=ids, phases=phases, thickness_mm=8.0, groups="NOR")

    train, holdout, synthetic = make(6, 1), make(6, 2), make(6, 3)
    report = api.audit(train, holdout, synthetic, groups=["fidelity"], out=tmp_path / "audit",
                       options={"clinical_bootstrap": 200})
    assert isinstance(report, AuditReport)
    names = {c.name for c in report.checks}
    assert "fidelity.clinical_index_distance" in names
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved["verdict"] == report.verdict
    assert {c["name"] for c in saved["checks"]} == names
