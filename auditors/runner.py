"""Run auditors over one context and fail closed: an auditor that raises yields a failing check."""
from __future__ import annotations

import time
import traceback

from .base import AuditContext, AuditResult, Check, Verdict, auditors_in, combine_verdicts, create_auditor


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
            result.checks.append(Check.exact(f"{auditor.group}.{name}_completed", 0.0, 1.0, ">=",
                                             description=f"the {name} auditor ran to completion",
                                             details=result.error))
        result.seconds = time.perf_counter() - start
        results.append(result)
    return results


def group_verdicts(results: list[AuditResult]) -> dict[str, str]:
    groups: dict[str, list[Verdict]] = {}
    for r in results:
        groups.setdefault(r.group, []).append(r.verdict)
    return {g: combine_verdicts(v).value for g, v in groups.items()}


def verdict(results: list[AuditResult]) -> str:
    """pass only when every check of every auditor passed; fail when any failed or errored; else inconclusive."""
    if not results or any(r.error for r in results) or not any(r.checks for r in results):
        return Verdict.FAIL.value
    return combine_verdicts(c.verdict for r in results for c in r.checks).value
