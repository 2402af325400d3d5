"""Figures for the audit report, as PNG bytes (matplotlib's object API: no global pyplot state).

A figure that shows a real patient's image must be created with public=False by its caller;
the helpers here draw only what they are given.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402

from cmri_release.core.labels import STRUCTURES  # noqa: E402

LABEL_COLOURS = {1: "tab:blue", 2: "tab:green", 3: "tab:red"}  # RV, MYO, LV


def to_png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def sample_grid(images_by_row: dict[str, np.ndarray], labels_by_row: dict[str, np.ndarray], title: str) -> bytes:
    """Rows of slices (one row per vendor) with the label outlines they were conditioned on."""
    rows = list(images_by_row)
    cols = max(len(v) for v in images_by_row.values())
    fig = MplFigure(figsize=(1.3 * cols, 1.4 * len(rows) + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), cols, squeeze=False))
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images_by_row[row]):
                ax.axis("off")
                continue
            ax.imshow(images_by_row[row][c], cmap="gray")
            for k, colour in LABEL_COLOURS.items():
                mask = labels_by_row[row][c] == k
                if mask.any() and not mask.all():
                    ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.6)
            if c == 0:
                ax.set_ylabel(row, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return to_png(fig)


def grouped_bars(groups: list[str], series: dict[str, list[float]], title: str, ylabel: str,
                 errors: dict[str, list[tuple[float, float]]] | None = None, ylim=None) -> bytes:
    """Bars of several series (e.g. synthetic, real) side by side for each group (e.g. structure)."""
    fig = MplFigure(figsize=(min(10.0, max(4.0, 0.6 * len(groups) * max(len(series), 1))), 3.0), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        vals = np.asarray(values, dtype=float)
        yerr = None
        if errors and name in errors:
            lo_hi = np.asarray(errors[name], dtype=float)
            yerr = np.abs(np.stack([vals - lo_hi[:, 0], lo_hi[:, 1] - vals]))
        ax.bar(x + (i - (len(series) - 1) / 2) * width, np.nan_to_num(vals), width, label=name, yerr=yerr,
               capsize=2)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8, rotation=30 if len(groups) > 6 else 0)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return to_png(fig)


def histograms(panels: dict[str, dict[str, np.ndarray]], title: str, bins: np.ndarray) -> bytes:
    """One panel per (vendor, structure) key: density histograms of each named set's intensities."""
    keys = list(panels)
    cols = min(3, len(keys))
    rows = int(np.ceil(len(keys) / cols))
    fig = MplFigure(figsize=(3.2 * cols, 2.3 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, key in zip(axes, keys):
        for name, values in panels[key].items():
            if len(values):
                ax.hist(values, bins=bins, density=True, histtype="step", label=name)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(keys):]:
        ax.axis("off")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return to_png(fig)


__all__ = ["STRUCTURES", "grouped_bars", "histograms", "sample_grid", "spectra", "to_png"]


def spectra(by_vendor: dict[str, dict[str, list[float]]], title: str) -> bytes:
    """One panel per vendor: each split's mean relative log power per radial band."""
    vendors = list(by_vendor) or ["none"]
    fig = MplFigure(figsize=(3.0 * len(vendors), 2.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(vendors), squeeze=False)).ravel()
    for ax, vendor in zip(axes, vendors):
        for split, values in by_vendor.get(vendor, {}).items():
            ax.plot(np.arange(len(values)), values, marker="o", markersize=3, label=split)
        ax.set_title(vendor, fontsize=8)
        ax.set_xlabel("radial band (low to Nyquist)", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("log10 share of power", fontsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return to_png(fig)
