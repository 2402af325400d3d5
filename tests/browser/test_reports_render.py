"""Both HTML reports render in headless Chromium: a non-blank screenshot, no console message, no request leaving
the page. Chromium's own background traffic (updates, accounts) is told apart in the net log by its initiator.

Skipped when Chromium is absent, except in CI (CI=true), where a missing browser fails the test.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("headless Chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed")
    return CHROMIUM


def render(chromium: str, html: Path, tmp: Path, height: int = 2400):
    """Screenshot `html`; returns (png path, console lines, URLs the page itself requested)."""
    png, netlog = tmp / f"{html.stem}.png", tmp / f"{html.stem}.netlog.json"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
           "--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}", "--host-resolver-rules=MAP * ~NOTFOUND",
           f"--window-size=1280,{height}", f"--screenshot={png}", html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    events = json.loads(netlog.read_text())
    types = {v: k for k, v in events["constants"]["logEventTypes"].items()}
    starts = [e.get("params", {}) for e in events["events"] if types.get(e["type"]) == "URL_REQUEST_START_JOB"]
    page_requests = sorted({p["url"] for p in starts if "url" in p and p.get("initiator") != "not an origin"})
    return png, console, page_requests


def assert_not_blank(png: Path):
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png)[..., :3]
    assert pixels.shape[0] > 500 and pixels.shape[1] > 500
    assert pixels.std() > 0.05, "the screenshot is blank"
    assert (pixels.mean(axis=-1) < 0.5).mean() > 0.005, "hardly any dark pixel: no text or image rendered"


def assert_no_external_reference(html: str):
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", html, re.I)
    assert "@import" not in html


def test_the_harness_catches_console_errors_and_requests(chromium, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><h1>x</h1><img src="http://example.invalid/a.png">'
                   '<script>console.error("boom")</script></body></html>')
    _, console, requests = render(chromium, bad, tmp_path, height=600)
    assert any("boom" in line for line in console)
    assert "http://example.invalid/a.png" in requests


def _tiny_cohort():
    from cmri_release.core.cohort import Cohort, Frame, Subject

    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    subjects = []
    for i, vendor in enumerate(("Siemens", "Philips", "GE", "Siemens")):
        frames = {}
        for phase, r in (("ED", 7.0 + i % 2), ("ES", 5.0)):
            label = np.zeros((32, 32, 4), np.uint8)
            label[np.hypot(x - 16, y - 16 + 2 * r) < r] = 1
            label[np.hypot(x - 16, y - 16) < r + 3] = 2
            label[np.hypot(x - 16, y - 16) < r] = 3
            image = np.choose(label, [30.0, 250.0, 80.0, 270.0]) + rng.normal(0, 10, label.shape)
            frames[phase] = Frame(phase, 1 if phase == "ED" else 9, image.astype(np.float32), label)
        subjects.append(Subject(f"syn-0-{i + 1:04d}", frames, np.diag([1.5, 1.5, 8, 1.0]), vendor=vendor,
                                group=("NOR", "DCM")[i % 2], n_frames=20))
    return Cohort(subjects)


def test_datasheet_renders(chromium, tmp_path):
    from cmri_release.reporting.datasheet import build_datasheet, render_datasheet

    checks = [{"name": "privacy.mia_auc", "value": 0.52, "threshold": 0.6, "op": "<=", "passed": True,
               "description": "best membership-inference attack", "details": ""}]
    model = build_datasheet(_tiny_cohort(), spec={"data": {"size": 64}, "synthesis": {"masks": "generated"},
                                                  "export": {"formats": ["nifti", "dicom"]}},
                            verdict="pass", checks=checks, model_card={"generator": "flow", "epochs": 3},
                            ledger={"dp": True, "epsilon": 8.0, "delta": 1e-3, "unit": "patient"},
                            collection={"generator": "flow", "source_description": "a 40-patient phantom",
                                        "spacing_mm": 2.5, "rows": [("Patients (train / holdout / test)", "20/10/10")]})
    html = render_datasheet(model)
    assert_no_external_reference(html)
    page = tmp_path / "datasheet.html"
    page.write_text(html, encoding="utf-8")
    png, console, requests = render(chromium, page, tmp_path)
    assert console == [], console
    assert requests == [], requests
    assert_not_blank(png)


def _png(title: str) -> bytes:
    import io

    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(4, 3), dpi=80)
    ax = fig.add_subplot()
    ax.plot([0, 0.2, 1], [0, 0.6, 1], label="attack")
    ax.plot([0, 1], [0, 1], "--", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_audit_report_renders(chromium, tmp_path):
    from auditors.base import AuditResult, Check, Figure
    from cmri_release.audit import AuditReport, write_audit

    results = [
        AuditResult("membership_inference", "privacy", metrics={"auc": 0.55, "note": "<b>not bold</b>"},
                    checks=[Check("privacy.mia_auc", 0.55, 0.6, "<=", description="best attack AUC")],
                    figures=[Figure("mia_roc", "ROC curves", _png("ROC"), public=True)], seconds=1.5),
        AuditResult("nn_memorisation", "privacy",
                    checks=[Check("privacy.near_copy_rate", 0.3, 0.1, "<=", description="near copies")],
                    figures=[Figure("pairs", "Closest pairs", _png("pairs"), public=False)], seconds=2.0),
        AuditResult("utility", "utility", error="RuntimeError: out of memory", seconds=0.1,
                    checks=[Check("utility.utility_completed", 0.0, 1.0, ">=")]),
    ]
    report = AuditReport(results=results, verdict="fail", groups=["privacy", "utility"], thresholds={},
                         timings={"membership_inference": 1.5, "total": 3.6})
    write_audit(report, tmp_path / "audit")
    html = (tmp_path / "audit" / "audit.html").read_text()
    assert_no_external_reference(html)
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html
    png, console, requests = render(chromium, tmp_path / "audit" / "audit.html", tmp_path)
    assert console == [], console
    assert requests == [], requests
    assert_not_blank(png)
