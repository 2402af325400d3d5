"""A hand-made AuditReport: a passed check, a failed one, an auditor that raised (with hostile characters)."""
from __future__ import annotations

import pytest

from auditors.base import AuditResult, Check, Figure
from cmri_release.audit import AuditReport

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00"
       b"\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa75\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")


@pytest.fixture
def report() -> AuditReport:
    ok = Check("privacy.near_copy_rate", 0.02, 0.10, "<=", lower=0.0, upper=0.06, confidence=0.95,
               description="near copies", details="pixels: 0/10")
    bad = Check("privacy.mia_auc", 0.91, 0.60, "<=", lower=0.8, upper=0.97, confidence=0.95,
                description="AUC <script>alert(1)</script>", details="gan_leaks & co")
    unsure = Check("privacy.closer_to_train_share", 0.5, 0.55, "<=", lower=0.3, upper=0.7, confidence=0.95,
                   description="closer", decide="about 120 synthetic patients would decide")
    broken = Check.exact("fidelity.boom_completed", 0.0, 1.0, ">=", details="RuntimeError: <disk> & \x00 on fire")
    results = [
        AuditResult("nn_memorisation", "privacy", metrics={"pixels": {"tau": 0.93, "nan": float("nan"),
                                                                      "pairs": [{"a": 1, "b": "<b>x</b>"}]}},
                    checks=[ok, unsure], figures=[Figure("pairs", "Closest pairs", PNG, public=False, caption="real")],
                    seconds=1.5),
        AuditResult("membership_inference", "privacy", metrics={"attacks": {"gan_leaks/pixels": {"auc": 0.91}}},
                    checks=[bad], figures=[Figure("roc", "ROC", PNG, public=True)], seconds=0.5),
        AuditResult("boom", "fidelity", error="RuntimeError: <disk> & \x00 on fire", checks=[broken], seconds=0.1),
    ]
    return AuditReport(results=results, verdict="fail", groups=["privacy", "fidelity"],
                       thresholds={"privacy.mia_auc": 0.6}, timings={"nn_memorisation": 1.5, "total": 2.1},
                       feature_spaces={"pixels": {"name": "pixels", "dim": 1024, "similarity": "Pearson", "how": "x"}},
                       inputs={"train": {"patients": 10, "slices": 200, "size": 32, "spacing_mm": 5.0,
                                         "vendors": ["A"]}}, seed=3)
