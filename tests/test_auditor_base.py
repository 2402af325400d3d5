import math

import pytest

from auditors.base import AuditContext, AuditResult, Auditor, Check
from auditors.runner import run_auditors, verdict


@pytest.mark.parametrize("value,op,threshold,passed", [
    (0.01, "<=", 0.02, True), (0.03, "<=", 0.02, False), (0.9, ">=", 0.8, True), (0.7, ">=", 0.8, False),
    (None, "<=", 1.0, False), (math.nan, "<=", 1.0, False), (math.inf, ">=", 0.0, False),
])
def test_check_fails_closed(value, op, threshold, passed):
    assert Check("privacy.x", value, threshold, op).passed is passed


def test_check_name_must_carry_a_group():
    with pytest.raises(ValueError):
        Check("x", 1.0, 1.0, "<=")


def test_an_auditor_that_raises_blocks(monkeypatch):
    from auditors import base

    class Boom(Auditor):
        name, group = "boom_test", "privacy"

        def run(self, ctx):
            raise RuntimeError("disk on fire")

    class Fine(Auditor):
        name, group = "fine_test", "privacy"
        default_thresholds = {"privacy.fine": (1.0, "<=", "ok")}

        def run(self, ctx):
            return AuditResult(self.name, self.group, checks=[self.check(ctx, "privacy.fine", 0.5)])

    monkeypatch.setattr(base, "AUDITORS", {"boom_test": Boom, "fine_test": Fine})
    ctx = AuditContext(train=None, holdout=None, synthetic=None)
    results = run_auditors(ctx, ["privacy"])
    assert verdict(results) == "fail"
    boom = [r for r in results if r.auditor == "boom_test"][0]
    assert "disk on fire" in boom.error and not boom.checks[0].passed
    assert verdict([r for r in results if r.auditor == "fine_test"]) == "pass"
    assert verdict([]) == "fail"  # no check at all is not a pass
