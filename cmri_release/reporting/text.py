"""The plain-text check table `audit` and `release` print: one line per check, then what blocks.

Reads check dictionaries (`Check.to_dict()` or a manifest's), so that both commands print alike.
"""
from __future__ import annotations


def _num(value) -> str:
    return "none" if value is None else f"{value:.4g}"


def _interval(c: dict) -> str:
    if c.get("lower") is None or c.get("upper") is None:
        return "none"
    return f"[{_num(c['lower'])}, {_num(c['upper'])}]"


def format_check_table(checks: list[dict]) -> list[str]:
    """check, estimate, interval, what it needs, verdict; the verdict says why when it is not a pass."""
    if not checks:
        return ["no check ran"]
    width = max(len(c["name"]) for c in checks)
    lines = [f"{'check':<{width}}  {'estimate':>9}  {'interval':<21} {'needs':<11} verdict"]
    for c in checks:
        verdict = c.get("verdict") or ("pass" if c.get("passed") else "fail")
        needs = f"{c['op']} {_num(c['threshold'])}"
        lines.append(f"{c['name']:<{width}}  {_num(c.get('estimate', c.get('value'))):>9}  {_interval(c):<21} "
                     f"{needs:<11} {verdict.upper() if verdict != 'pass' else verdict}")
    return lines


def blocking_reasons(checks: list[dict]) -> list[str]:
    """One line per check that blocks: fail (shown outside) or inconclusive (with what would decide it)."""
    out = []
    for c in checks:
        verdict = c.get("verdict") or ("pass" if c.get("passed") else "fail")
        if verdict == "pass":
            continue
        reason = c.get("reason") or "no verdict"
        out.append(f"{c['name']} {verdict}: {reason}")
    return out
