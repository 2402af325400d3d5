"""What every auditor's result must be, shared by the contract over the registered auditors and by the example
auditor of docs/extending.md."""
from __future__ import annotations

import json

from auditors.base import GROUPS, AuditResult, Check, Figure, Verdict


def assert_follows_the_contract(result: AuditResult, cls) -> None:
    assert result.error is None, result.error
    assert cls.group in GROUPS and (result.auditor, result.group) == (cls.name, cls.group)
    assert result.checks and all(isinstance(c, Check) for c in result.checks)
    names = [c.name for c in result.checks]
    assert len(names) == len(set(names)) and set(names) <= set(cls.default_thresholds), names
    for check in result.checks:
        assert isinstance(check.verdict, Verdict) and check.reason
    json.dumps(result.metrics, allow_nan=True)  # audit.json must be able to hold them
    for figure in result.figures:
        assert isinstance(figure, Figure) and figure.png.startswith(b"\x89PNG") and figure.title
