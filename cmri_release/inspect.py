"""`inspect`: summarise a cohort on disk and list everything wrong with it.

Subjects are read one at a time and dropped after their summary, so a large cohort never sits in
memory, and every problem is recorded rather than stopping at the first. The checks cover
nnU-Net's `verify_dataset_integrity` (image/label shapes, spacing image vs label, NaN, unexpected
labels, missing masks) plus inf, empty label maps, an empty cohort, duplicate (also
case-insensitive) and unsafe subject ids, truncated or disguised files and broken geometry (the
readers raise those). A cohort is usable when it has subjects and no problem.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .core.cohort import PHASES, Subject
from .core.errors import InputError
from .io import duplicate_id_problem, subject_entries
from .io.nifti import describe
from .core.labels import LV, MYO, RV

_STRUCTURES = (("RV", RV), ("MYO", MYO), ("LV", LV))


def _line(text: str) -> str:
    return " ".join(str(text).split())


def structure_volumes_ml(subject: Subject) -> dict | None:
    """{"ED": {"RV", "MYO", "LV"}, "ES": {...}} in millilitres; a phase without labels is None."""
    if not any(frame.label is not None for frame in subject.frames.values()):
        return None
    voxel_ml = abs(float(np.linalg.det(subject.affine[:3, :3]))) / 1000.0
    out = {}
    for phase in PHASES:
        frame = subject.frames.get(phase)
        if frame is None or frame.label is None:
            out[phase] = None
            continue
        counts = np.bincount(frame.label.ravel(), minlength=4)
        out[phase] = {name: round(float(counts[value]) * voxel_ml, 3) for name, value in _STRUCTURES}
    return out


def _subject_problems(subject: Subject, source: Path) -> list[str]:
    problems = []
    labelled = [p for p, f in subject.frames.items() if f.label is not None]
    for phase in labelled:
        if not subject.frames[phase].label.any():
            problems.append(f"{source}: {phase} label map is empty (background only)")
    if labelled and len(labelled) < len(subject.frames):
        missing = sorted(set(subject.frames) - set(labelled))
        problems.append(f"{source}: missing mask for {', '.join(missing)} (other phases are labelled)")
    return problems


def _range(values: list) -> dict | None:
    if not values:
        return None
    arr = np.array(values, dtype=np.float64)
    return {"min": [round(float(v), 4) for v in arr.min(axis=0)], "max": [round(float(v), 4) for v in arr.max(axis=0)]}


def inspect_cohort(path, *, progress: bool = False) -> dict:
    """A JSON-ready summary of the cohort at `path` with every problem found (one line each, naming the file)."""
    report = {"path": str(path), "layout": None, "n_subjects": 0, "n_labelled_subjects": 0, "n_slices": 0,
              "vendors": {}, "groups": {}, "spacing": None, "shape": None, "subjects": [], "problems": [],
              "usable": False}
    problems: list[str] = report["problems"]
    try:
        report["layout"], entries = subject_entries(path)
    except InputError as exc:
        problems.append(_line(exc))
        return report
    seen: dict[str, Path] = {}
    vendors, groups, spacings, shapes, unlabelled = Counter(), Counter(), [], [], []
    for entry in tqdm(entries, desc="inspect", unit="subject", disable=None if progress else True):
        try:
            subject = entry.load()
        except InputError as exc:
            problems.append(_line(exc))
            continue
        except Exception as exc:  # fail closed: anything else is a problem of this subject too
            problems.append(_line(f"{entry.source}: {describe(exc)}"))
            continue
        duplicate = duplicate_id_problem(subject.id, entry.source, seen)
        if duplicate:
            problems.append(_line(duplicate))
            continue
        problems.extend(_line(p) for p in _subject_problems(subject, entry.source))
        if not subject.has_labels:
            unlabelled.append(entry.source)
        vendors[subject.vendor] += 1
        groups[subject.group] += 1
        spacings.append(subject.spacing)
        shapes.append(subject.shape)
        report["n_slices"] += subject.shape[2] * len(subject.frames)
        report["subjects"].append({"id": subject.id, "vendor": subject.vendor, "group": subject.group,
                                   "shape": list(subject.shape), "spacing": [round(v, 4) for v in subject.spacing],
                                   "volumes_ml": structure_volumes_ml(subject)})
    n = len(report["subjects"])
    report["n_subjects"], report["n_labelled_subjects"] = n, n - len(unlabelled)
    if 0 < len(unlabelled) < n:  # a partly labelled cohort: the unlabelled ones are missing masks
        problems.extend(_line(f"{source}: missing masks (other subjects are labelled)") for source in unlabelled
                        if not any(p.startswith(f"{source}: missing mask") for p in problems))
    if n == 0 and not problems:
        problems.append(f"{path}: no readable subjects")
    report["vendors"], report["groups"] = dict(sorted(vendors.items())), dict(sorted(groups.items()))
    report["spacing"], report["shape"] = _range(spacings), _range(shapes)
    report["usable"] = n > 0 and not problems
    return report


def _mean_volumes(report: dict) -> list[str]:
    lines = []
    for phase in PHASES:
        rows = [s["volumes_ml"][phase] for s in report["subjects"] if s["volumes_ml"] and s["volumes_ml"][phase]]
        if rows:
            parts = [f"{name} {np.mean([r[name] for r in rows]):.1f}" for name, _ in _STRUCTURES]
            lines.append(f"  {phase}: " + ", ".join(parts) + f"  (mean of {len(rows)} subjects)")
    return lines


def format_inspect(report: dict) -> str:
    """The report as a short readable summary."""
    axes = ("x", "y", "z")
    out = [f"cohort: {report['path']} ({report['layout'] or 'unknown'} layout)",
           f"subjects: {report['n_subjects']} ({report['n_labelled_subjects']} labelled), "
           f"short-axis slices (ED+ES): {report['n_slices']}",
           "vendors: " + (", ".join(f"{k} {v}" for k, v in report["vendors"].items()) or "none"),
           "groups: " + (", ".join(f"{k} {v}" for k, v in report["groups"].items()) or "none")]
    for key, unit in (("spacing", "mm"), ("shape", "voxels")):
        if report[key]:
            lo, hi = report[key]["min"], report[key]["max"]
            fmt = "{:g}"
            out.append(f"{key} ({unit}): " + ", ".join(
                f"{a} {fmt.format(l)}" + ("" if l == h else f"-{fmt.format(h)}") for a, l, h in zip(axes, lo, hi)))
    volumes = _mean_volumes(report)
    if volumes:
        out.append("volumes (ml):")
        out += volumes
    out.append(f"problems: {len(report['problems']) or 'none'}")
    out += [f"  - {p}" for p in report["problems"]]
    out.append(f"usable: {'yes' if report['usable'] else 'no'}")
    return "\n".join(out)
