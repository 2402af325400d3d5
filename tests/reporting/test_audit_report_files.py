"""audit.json (strict JSON) and audit.html (autoescaped, self-contained) from one hand-made report."""
import base64
import json
import re

from cmri_release.audit import write_audit
from cmri_release.reporting.audit_json import jsonable


def test_audit_json_is_strict_and_complete(tmp_path, report):
    paths = write_audit(report, tmp_path / "out")
    doc = json.loads(paths["json"].read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert doc["verdict"] == "fail" and [c["name"] for c in doc["checks"]] == [
        "privacy.near_copy_rate", "privacy.closer_to_train_share", "privacy.mia_auc", "fidelity.boom_completed"]
    expected = {"value": 0.91, "estimate": 0.91, "lower": 0.8, "upper": 0.97, "confidence": 0.95, "threshold": 0.6,
                "op": "<=", "passed": False, "verdict": "fail"}
    assert {k: doc["checks"][2][k] for k in expected} == expected
    assert doc["checks"][1]["verdict"] == "inconclusive" and "120 synthetic" in doc["checks"][1]["decide"]
    assert doc["metrics"]["nn_memorisation"]["pixels"]["nan"] is None  # NaN -> null
    assert doc["errors"] == {"boom": "RuntimeError: <disk> & \x00 on fire"}
    assert doc["figures"][0] == {"auditor": "nn_memorisation", "name": "pairs", "title": "Closest pairs",
                                 "public": False}
    assert doc["seed"] == 3 and doc["timings"]["total"] == 2.1


def test_jsonable_converts_numpy():
    import numpy as np

    assert jsonable({"a": np.float32(1.5), "b": np.arange(2), "c": np.inf, 1: np.bool_(True)}) == {
        "a": 1.5, "b": [0, 1], "c": None, "1": True}


def test_audit_html_is_escaped_and_self_contained(tmp_path, report):
    html = write_audit(report, tmp_path / "out")["html"].read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # data never becomes markup
    assert "&lt;b&gt;x&lt;/b&gt;" in html  # a record table cell from metrics
    assert not re.search(r"(src|href)=\"(https?:)?//", html) and "@import" not in html  # no external resource
    assert "<style>" in html and "--pass" in html  # CSS inline
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 2 and base64.b64decode(images[0]).startswith(b"\x89PNG")
    assert html.count("Internal: this figure shows real patients") == 1  # the public=False figure only
    for text in ("privacy.near_copy_rate", "FAIL", "0.91", "RuntimeError"):
        assert text in html
