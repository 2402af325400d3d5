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
from markupsafe import Markup

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


def interval_svg(check: dict, width: int = 160, height: int = 22) -> Markup:
    """The check's interval (bar), estimate (dot) and threshold (red tick) on one axis, as inline SVG.

    Only numbers enter the markup (formatted here), so marking it safe cannot inject anything.
    """
    values = [check.get(k) for k in ("lower", "upper", "estimate", "threshold")]
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(values) < 2 or check.get("lower") is None or check.get("upper") is None:
        return Markup("")
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return round(4 + (width - 8) * (float(v) - lo) / (hi - lo), 1)

    colour = {"pass": "#1e7b3a", "fail": "#b3261e"}.get(check.get("verdict"), "#b36b00")
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="interval against threshold">',
             f'<line x1="4" y1="{height - 4}" x2="{width - 4}" y2="{height - 4}" stroke="#d7dde2"/>',
             f'<line x1="{x(check["lower"])}" y1="11" x2="{x(check["upper"])}" y2="11" stroke="{colour}" '
             f'stroke-width="4"/>',
             f'<line x1="{x(check["threshold"])}" y1="2" x2="{x(check["threshold"])}" y2="{height - 2}" '
             f'stroke="#b3261e" stroke-width="2"/>']
    if check.get("estimate") is not None:
        parts.append(f'<circle cx="{x(check["estimate"])}" cy="11" r="3" fill="#1d2329"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def environment() -> Environment:
    env = Environment(loader=PackageLoader("report_templates", ""), autoescape=True)
    env.globals["interval_svg"] = interval_svg
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
