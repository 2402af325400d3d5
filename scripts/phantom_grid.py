"""Write a PNG of phantom slices per vendor (full field of view, label contours) to look at.

    python scripts/phantom_grid.py OUT.png [--per-vendor 2] [--seed 0] [--vendors Siemens,Philips,GE]

Each row is one subject; columns are the ED base, mid and apical slices, ES at the base and at
the mid slice, and a zoom on the heart at ED and ES. Contours: RV yellow, MYO green, LV red.
"""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cmri_release.phantom import DEFAULT_VENDORS, make_phantom  # noqa: E402

COLOURS = {1: "yellow", 2: "lime", 3: "red"}


def _show(ax, image, label, title, window=None):
    """image, label: (x, y); shown with x to the right and y down, as a scanner displays a short axis."""
    img, lab = image.T, label.T
    if window is not None:
        (r0, r1), (c0, c1) = window
        img, lab = img[r0:r1, c0:c1], lab[r0:r1, c0:c1]
    ax.imshow(img, cmap="gray", vmin=0, vmax=np.percentile(image, 99.5), interpolation="nearest")
    for value, colour in COLOURS.items():
        if (lab == value).any():
            ax.contour(lab == value, levels=[0.5], colors=colour, linewidths=0.6)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--per-vendor", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vendors", default=",".join(DEFAULT_VENDORS))
    args = parser.parse_args(argv)
    vendors = [v for v in args.vendors.split(",") if v]
    cohort = make_phantom(args.per_vendor * len(vendors), args.seed, vendors=vendors)
    subjects = sorted(cohort, key=lambda s: s.vendor)
    fig, axes = plt.subplots(len(subjects), 7, figsize=(21, 3.1 * len(subjects)))
    axes = np.atleast_2d(axes)
    for row, subject in zip(axes, subjects):
        ed, es = subject.frames["ED"], subject.frames["ES"]
        nz = ed.image.shape[2]
        mid = nz // 2
        name = f"{subject.id} {subject.vendor} {subject.group}"
        for ax, (k, tag) in zip(row[:3], ((0, "base"), (mid, "mid"), (nz - 1, "apex"))):
            _show(ax, ed.image[:, :, k], ed.label[:, :, k], f"{name} ED {tag} z{k}")
        _show(row[3], es.image[:, :, 0], es.label[:, :, 0], "ES base z0")
        _show(row[4], es.image[:, :, mid], es.label[:, :, mid], f"ES mid z{mid}")
        xs, ys = np.nonzero(ed.label[:, :, mid])
        half = int(70 / subject.spacing[0])
        cx, cy = int(xs.mean()), int(ys.mean())
        win = ((max(cy - half, 0), cy + half), (max(cx - half, 0), cx + half))
        _show(row[5], ed.image[:, :, mid], ed.label[:, :, mid], "ED mid zoom", win)
        _show(row[6], es.image[:, :, mid], es.label[:, :, mid], "ES mid zoom", win)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out} ({len(subjects)} subjects)")


if __name__ == "__main__":
    main()
