"""The datasheet's clinical-indices table: synthetic beside real, aggregates only, small cells suppressed."""
import re

import numpy as np
import pytest

from auditors.base import AuditContext
from auditors.fidelity.clinical_indices import INDICES, ClinicalIndicesAuditor
from cmri_release.phantom import make_phantom
from cmri_release.core.sliceset import SliceSet
from cmri_release.reporting.datasheet import MIN_CELL, build_datasheet, clinical_indices_table, render_datasheet


def box_hearts(n: int, seed: int, prefix: str) -> SliceSet:
    """n patients of 3 slices per phase: rectangles of LV, MYO and RV of random size (ES smaller)."""
    rng = np.random.default_rng(seed)
    labels, ids, phases = [], [], []
    for i in range(n):
        r = rng.integers(3, 6)
        for phase, shrink in (("ED", 0), ("ES", 1)):
            for _ in range(3):
                lab = np.zeros((16, 16), np.uint8)
                lab[2:14, 2:14] = 2
                lab[4:4 + 2 * (r - shrink), 4:4 + 2 * (r - shrink)] = 3
                lab[0:2, 0:rng.integers(6, 12) - shrink] = 1
                labels.append(lab), ids.append(f"{prefix}{i:03d}"), phases.append(phase)
    k = len(labels)
    meta = {f"{prefix}{i:03d}": {"thickness_mm": 8.0, "group": "rare" if i < 3 else "common"} for i in range(n)}
    return SliceSet(images=np.zeros((k, 16, 16)), labels=np.stack(labels), subject_ids=ids, vendors=["A"] * k,
                    phases=phases, slice_pos=np.zeros(k), slice_index=np.tile([0, 1, 2], k // 3),
                    has_label=np.ones(k, bool), spacing_mm=2.0, subject_meta=meta)


@pytest.fixture(scope="module")
def metrics():
    sets = [box_hearts(30, seed, prefix) for seed, prefix in ((1, "t"), (2, "h"), (3, "y"))]
    ctx = AuditContext(train=sets[0], holdout=sets[1], synthetic=sets[2], quiet=True)
    return ClinicalIndicesAuditor().run(ctx).metrics


def test_table_holds_aggregates_beside_the_real_population(metrics):
    table = clinical_indices_table(metrics)
    assert [r["label"] for r in table["overall"]] == [v[0] for v in INDICES.values()]
    for row in table["overall"]:
        key = next(k for k, v in INDICES.items() if v[0] == row["label"])
        assert row["synthetic"][0] == pytest.approx(metrics["summary"]["synthetic"][key]["mean"])
        assert row["real"][0] == pytest.approx(metrics["summary"]["holdout"][key]["mean"])
        assert row["upper"] == pytest.approx(metrics["distance"][key]["upper"])
    rare = [r for r in table["by_group"] if r["group"] == "rare"]
    assert rare and all(c is None for r in rare for c in r["cells"])  # 3 < MIN_CELL patients: suppressed
    assert MIN_CELL == 5


def test_rendered_datasheet_shows_the_table_and_no_patient(metrics):
    cohort = make_phantom(2, seed=4)
    check = {"name": "fidelity.clinical_index_distance", "passed": True, "verdict": "pass", "estimate": 0.2,
             "threshold": 0.8, "op": "<="}
    html = render_datasheet(build_datasheet(cohort, spec={}, verdict="pass", checks=[check], model_card={},
                                            ledger=None, clinical=metrics))
    assert "Cardiac clinical indices" in html and "LV EF" in html and "RV EDV" in html
    section = html[html.index("Cardiac clinical indices"):]
    section = section[:section.index("</table>", section.index("</table>") + 1)]
    assert not re.search(r"[thy]\d{3}", section)  # no subject id of any cohort
    assert "median" not in section.lower().replace("no median", "")


def test_no_clinical_metrics_no_section():
    cohort = make_phantom(1, seed=4)
    html = render_datasheet(build_datasheet(cohort, spec={}, verdict="pass", checks=[], model_card={}, ledger=None))
    assert "Cardiac clinical indices" not in html
    assert clinical_indices_table(None) == {} and clinical_indices_table({"x": 1}) == {}
