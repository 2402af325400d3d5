"""`audit.json`: the machine-readable audit (what CI scripts and the release gate read).

    {"verdict": "pass"|"fail"|"inconclusive", "group_verdicts": {group: verdict},
     "checks": [{"name", "verdict", "estimate", "lower", "upper", "confidence", "threshold", "op", "reason",
                 "decide", "plan", "passed", "value" (= estimate), ...}],
     "metrics": {auditor: metrics}, "errors": {auditor: message}, "timings": {auditor: s, "total": s},
     "feature_spaces": {...}, "inputs": {...}, "figures": [...], "groups", "thresholds", "seed", "version"}

Strict JSON: numpy scalars and arrays become numbers and lists, NaN and infinities become null.
Figures are listed (name, title, public) but not embedded; the HTML report carries the images.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

import numpy as np

from .. import __version__


def jsonable(value):
    """A copy of `value` that `json.dumps(..., allow_nan=False)` accepts."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def audit_document(report) -> dict:
    return jsonable({
        "verdict": report.verdict,
        "group_verdicts": getattr(report, "group_verdicts", {}),
        "checks": [c.to_dict() for c in report.checks],
        "metrics": {r.auditor: r.metrics for r in report.results},
        "errors": report.errors,
        "timings": report.timings,
        "feature_spaces": report.feature_spaces,
        "inputs": report.inputs,
        "figures": [{"auditor": r.auditor, "name": f.name, "title": f.title, "public": f.public}
                    for r in report.results for f in r.figures],
        "groups": report.groups,
        "thresholds": report.thresholds,
        "seed": report.seed,
        "version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })


def write_audit_json(report, path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(audit_document(report), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path
