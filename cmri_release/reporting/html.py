"""`audit.html`: the internal audit report, one self-contained page (CSS inline, figures as base64 PNG).

The page is internal: it may show real patients' images (figures with `public=False`, marked as
such). It is rendered from `audit_json.audit_document` (the same data as audit.json) through one
autoescaped jinja2 environment, because metric names, subject ids and error messages come from data.
"""
from __future__ import annotations

import base64
import math
from pathlib import Path

from jinja2 import Environment, PackageLoader

from .audit_json import audit_document


def fmt(value) -> str:
    """Numbers with 4 significant digits, None as an em dash, lists joined."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return ", ".join(fmt(v) for v in value)
        return f"{len(value)} entries"
    return str(value)


def metric_rows(metrics, prefix: str = "") -> list[tuple[str, object]]:
    """Nested metrics as (dotted name, value) rows; lists of records stay whole (rendered as tables)."""
    rows = []
    for key, value in (metrics or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += metric_rows(value, name + ".")
        else:
            rows.append((name, value))
    return rows


def is_records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def environment() -> Environment:
    env = Environment(loader=PackageLoader("report_templates", ""), autoescape=True)
    env.filters["fmt"] = fmt
    env.tests["records"] = is_records
    return env


def render_audit_html(report) -> str:
    doc = audit_document(report)
    figures = {}
    for result in report.results:
        figures[result.auditor] = [{"name": f.name, "title": f.title, "caption": f.caption, "public": f.public,
                                    "png_b64": base64.b64encode(f.png).decode("ascii")} for f in result.figures]
    auditors = [{"name": r.auditor, "group": r.group, "seconds": r.seconds, "error": r.error,
                 "checks": [c.to_dict() for c in r.checks], "metrics": metric_rows(doc["metrics"].get(r.auditor)),
                 "figures": figures.get(r.auditor, [])} for r in report.results]
    return environment().get_template("audit.html").render(doc=doc, auditors=auditors)


def write_audit_html(report, path) -> Path:
    path = Path(path)
    path.write_text(render_audit_html(report), encoding="utf-8")
    return path
