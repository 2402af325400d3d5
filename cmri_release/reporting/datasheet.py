"""The public datasheet of a release: a typed model, then one autoescaped jinja2 render.

The model follows Datasheets for Datasets (Gebru et al., arXiv 1803.09010): motivation,
composition, collection, preprocessing, uses, distribution, maintenance; plus the generator's
model card, its privacy ledger and the gate's checks. It is public, so it shows synthetic images
only: its sample grid is drawn from the released (synthetic) cohort itself, and of the audit's
figures only those marked `public is True` enter (a figure with any other flag is left out: a
missing flag fails closed). The page is self-contained: CSS inline, images as base64 PNG, no URL.
"""
from __future__ import annotations

import base64
import datetime as _dt
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader

from .. import __version__
from ..core.cohort import Cohort
from ..core.labels import LABEL_NAMES, STRUCTURES
from .html import fmt

STRUCTURE_COLOURS = {1: "#1f77b4", 2: "#2ca02c", 3: "#d62728"}  # RV blue, MYO green, LV red (as the audit draws them)


@dataclass
class Image:
    title: str
    png_b64: str
    caption: str = ""


@dataclass
class DatasheetModel:
    """Everything the datasheet says, as plain data (strings from data are escaped at render time)."""

    title: str
    created_utc: str
    tool_version: str
    verdict: str
    checks: list[dict]
    composition: dict[str, Any]
    collection: dict[str, Any]
    preprocessing: dict[str, Any]
    model_card: list[tuple[str, str]]
    ledger: list[tuple[str, str]]
    dp: bool
    masks: str
    formats: list[str]
    files: dict[str, Any]
    samples: list[Image] = field(default_factory=list)
    figures: list[Image] = field(default_factory=list)
    clinical: dict[str, Any] = field(default_factory=dict)  # clinical_indices_table(): aggregates only
    audit: dict[str, Any] = field(default_factory=dict)  # the manifest's audit record (what `verify` re-runs)


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as ("a.b", "value") rows for key-value tables."""
    rows = []
    if isinstance(value, dict):
        for key, sub in value.items():
            rows += _flatten(sub, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        for i, sub in enumerate(value):
            rows += _flatten(sub, f"{prefix}[{i}]")
    else:
        rows.append((prefix, fmt(value)))
    return rows


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _mid_slice(label: np.ndarray | None, depth: int) -> int:
    """The slice halfway between the first and last slice holding the LV (or the middle one)."""
    if label is not None:
        z = np.flatnonzero((label == 3).reshape(-1, depth).any(axis=0))
        if len(z):
            return int(z[len(z) // 2])
    return depth // 2


def sample_grid(cohort: Cohort, per_vendor: int = 4) -> Image:
    """ED and ES mid-ventricular slices of the first subjects of each vendor, with label contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vendors = sorted({s.vendor for s in cohort})
    rows = [[s for s in cohort if s.vendor == v][:per_vendor] for v in vendors]
    cols = max(len(r) for r in rows) * 2
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.75 * len(rows)), squeeze=False)
    for r, (vendor, subjects) in enumerate(zip(vendors, rows)):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_axis_off()
            if c // 2 >= len(subjects):
                continue
            subject, phase = subjects[c // 2], ("ED", "ES")[c % 2]
            frame = subject.frames.get(phase)
            if frame is None:
                continue
            z = _mid_slice(frame.label, frame.image.shape[2])
            image = frame.image[:, :, z].T  # rows = y, as a scanner displays it
            lo, hi = np.percentile(image, [1, 99.5])
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if frame.label is not None:
                for k, colour in STRUCTURE_COLOURS.items():
                    mask = frame.label[:, :, z].T == k
                    if mask.any():
                        ax.contour(mask, levels=[0.5], colors=[colour], linewidths=0.8)
            ax.set_title(f"{subject.id}\n{vendor} · {phase}", fontsize=6)
    fig.suptitle("Synthetic subjects, mid-ventricular slice (contours: RV blue, MYO green, LV red)", fontsize=8)
    png = _png(fig)
    plt.close(fig)
    return Image("Synthetic samples by vendor", png,
                 "Every image here is generated; none shows a real patient. Rows: vendor style; pairs: ED, ES.")


def composition(cohort: Cohort) -> dict[str, Any]:
    """What the release holds: counts, vendors, groups, geometry, structure volumes (from the label maps)."""
    spacings = np.array([s.spacing for s in cohort])
    shapes = np.array([s.shape for s in cohort])
    volumes = {phase: {name: [] for name in STRUCTURES} for phase in ("ED", "ES")}
    slices = 0
    for s in cohort:
        ml = float(np.prod(s.spacing)) / 1000.0
        for phase, frame in s.frames.items():
            slices += frame.image.shape[2]
            if frame.label is not None:
                counts = np.bincount(frame.label.ravel(), minlength=4)
                for k, name in enumerate(STRUCTURES, start=1):
                    volumes[phase][name].append(counts[k] * ml)
    volume_rows = []
    for phase in ("ED", "ES"):
        for name in STRUCTURES:
            v = volumes[phase][name]
            if v:
                volume_rows.append((phase, name, float(np.mean(v)), float(np.std(v)), len(v)))
    return {
        "n_subjects": len(cohort), "n_slices": slices, "example_id": cohort.subjects[0].id if len(cohort) else "",
        "phases": sorted({p for s in cohort for p in s.frames}),
        "vendors": dict(sorted(Counter(s.vendor for s in cohort).items())),
        "groups": dict(sorted(Counter(s.group for s in cohort).items())),
        "labelled": sum(s.has_labels for s in cohort),
        "shape_min": shapes.min(axis=0).tolist(), "shape_max": shapes.max(axis=0).tolist(),
        "spacing_min": [round(float(v), 3) for v in spacings.min(axis=0)],
        "spacing_max": [round(float(v), 3) for v in spacings.max(axis=0)],
        "volumes_ml": volume_rows,
        "label_map": {k: v for k, v in LABEL_NAMES.items()},
    }


MIN_CELL = 5  # a mean over fewer patients is suppressed in the public datasheet (it would nearly show a patient)


def clinical_indices_table(metrics: dict | None) -> dict[str, Any]:
    """The clinical-indices section from the `clinical_indices` auditor's metrics: synthetic beside real holdout.

    Means and SDs only (no median or quartile, which can be one patient's value), and no cell of fewer than
    MIN_CELL patients; the distance of each index with its upper bound, as the audit measured it.
    """
    if not metrics or "summary" not in metrics:
        return {}

    def cell(summary: dict) -> tuple[float, float, int] | None:
        n = int(summary.get("n", 0))
        return (summary["mean"], summary["sd"], n) if n >= MIN_CELL else None

    distance = metrics.get("distance", {})
    overall = []
    for key, info in metrics.get("indices", {}).items():
        overall.append({"label": info["label"], "unit": info["unit"],
                        "synthetic": cell(metrics["summary"]["synthetic"].get(key, {})),
                        "real": cell(metrics["summary"]["holdout"].get(key, {})),
                        "distance": distance.get(key, {}).get("estimate"),
                        "upper": distance.get(key, {}).get("upper")})
    groups = []
    for group, by in sorted(metrics.get("by_group", {}).items()):
        for cohort, name in (("synthetic", "synthetic"), ("holdout", "real")):
            cells = [cell(by.get(cohort, {}).get(key, {})) for key in metrics.get("indices", {})]
            groups.append({"group": group, "cohort": name, "cells": cells})
    return {"overall": overall, "by_group": groups, "labels": [(i["label"], i["unit"]) for i in
                                                                 metrics.get("indices", {}).values()],
            "patients": metrics.get("patients", {}), "min_cell": MIN_CELL}


def build_datasheet(cohort: Cohort, *, spec: dict, verdict: str, checks: list[dict], model_card: dict | None,
                    ledger: dict | None, figures=(), files: dict | None = None,
                    collection: dict | None = None, clinical: dict | None = None,
                    audit: dict | None = None) -> DatasheetModel:
    """The datasheet model of a release. `figures` are audit Figures; only `public is True` ones are kept."""
    card = {k: v for k, v in (model_card or {}).items() if k not in ("checksums", "privacy")}
    ledger = dict(ledger or {"dp": False, "unit": "patient"})
    public = [Image(f.title, base64.b64encode(f.png).decode("ascii"), f.caption)
              for f in figures if getattr(f, "public", None) is True]
    pre = dict(spec.get("data", {}))
    collection = {"generator": None, "source_description": "a cohort of real patients", "loaded": False,
                  "spacing_mm": None, "rows": [], **(collection or {})}
    return DatasheetModel(
        title="Synthetic cardiac MRI release",
        created_utc=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        tool_version=__version__, verdict=verdict, checks=list(checks),
        composition=composition(cohort), collection=collection,
        preprocessing={"size": pre.get("size"), "spacing_mm": collection["spacing_mm"]},
        model_card=_flatten(card), ledger=_flatten(ledger), dp=bool(ledger.get("dp")),
        masks=spec.get("synthesis", {}).get("masks", "generated"),
        formats=list(spec.get("export", {}).get("formats", ["nifti"])), files=dict(files or {}),
        samples=[sample_grid(cohort)], figures=public, clinical=clinical_indices_table(clinical),
        audit=dict(audit or {}),
    )


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("report_templates", ""), autoescape=True)
    env.filters["fmt"] = fmt
    return env


def render_datasheet(model: DatasheetModel) -> str:
    return _environment().get_template("datasheet.html").render(m=model)
