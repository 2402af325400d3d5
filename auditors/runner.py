"""Run auditors over one context and fail closed: an auditor that raises yields a failing check."""
from __future__ import annotations

import time
import traceback

from .base import AuditContext, AuditResult, Check, auditors_in, create_auditor


def run_auditors(ctx: AuditContext, groups, names=None) -> list[AuditResult]:
    results = []
    for name in names or auditors_in(groups):
        auditor = create_auditor(name)
        start = time.perf_counter()
        try:
            result = auditor.run(ctx)
        except Exception as exc:  # noqa: BLE001 - any failure must block the release, with its reason
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            result = AuditResult(auditor=name, group=auditor.group, error=detail)
        if result.error is not None:
            # An auditor that could not finish is a failed check, never a silent pass.
            result.checks.append(Check(name=f"{auditor.group}.{name}_completed", value=0.0, threshold=1.0, op=">=",
                                       description=f"the {name} auditor ran to completion",
                                       details=result.error))
        result.seconds = time.perf_counter() - start
        results.append(result)
    return results


def verdict(results: list[AuditResult]) -> str:
    checks = [c for r in results for c in r.checks]
    if not checks or any(r.error for r in results) or not all(c.passed for c in checks):
        return "fail"
    return "pass"
