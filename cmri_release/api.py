"""The Python API: everything the CLI does, from a notebook, in a few calls (walkthrough: docs/api.md).

- `slices_from_arrays(...)`: a `SliceSet` from numpy arrays in one call (per-slice fields given once or per
  slice, the rest filled: slice order and position per patient and phase, metadata per patient);
- `load_cohort(path)` / `load_slices(path_or_cohort, size=...)`: a cohort folder (cohort layout, ACDC, M&Ms,
  DICOM) read, and preprocessed into a SliceSet as the audit does;
- `audit(train, holdout, synthetic, ...)`: the audit on SliceSets, cohorts or folders, returning the typed
  `AuditReport` (checks with estimate, interval, threshold and verdict), and its files when `out` is given;
- `release(spec)`: the whole gate from a spec file (or a parsed `ReleaseSpec`), returning its outcome.

A generator trained elsewhere is audited white-box through the `MembershipScorer` protocol (one method,
`membership_scores(slices, seed)`, and a `model_card` dict); `generators.adapters` has adapters for diffusers'
UNet2DModel and MONAI's DiffusionModelUNet. Heavy modules are imported inside the functions, so importing this
module is cheap.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .core.sliceset import SliceSet

__all__ = ["slices_from_arrays", "load_cohort", "load_slices", "audit", "release", "MembershipScorer"]


def __getattr__(name: str):
    if name == "MembershipScorer":  # the white-box protocol, re-exported without importing auditors eagerly
        from auditors.base import MembershipScorer

        return MembershipScorer
    raise AttributeError(name)


def _per_slice(value, n: int, name: str, dtype=None) -> np.ndarray:
    """A field given once (for every slice) or once per slice, as an (n,) array."""
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim == 0:
        return np.array([arr.item()] * n, dtype=dtype)  # np.full with dtype=str would cut strings to one letter
    if arr.shape != (n,):
        raise ValueError(f"{name}: give one value or one per slice ({n}), got shape {arr.shape}")
    return arr


def slices_from_arrays(images, labels=None, *, subject_ids, vendors="unknown", phases="ED", slice_index=None,
                       spacing_mm: float = 1.25, thickness_mm: float | Mapping[str, float] | None = None,
                       groups: str | Mapping[str, str] | None = None) -> SliceSet:
    """A SliceSet from (N, H, W) images in [0, 1] and (N, H, W) ACDC label maps (0 bg, 1 RV, 2 MYO, 3 LV).

    `subject_ids` (one per slice) is required: the patient is the unit of every split and attack. `vendors` and
    `phases` are one value or one per slice. `slice_index` defaults to the order of the slices within each
    patient and phase (base first); slice positions run 0 (base) to 1 (apex) along it. `thickness_mm` (the
    distance between slice centres) and `groups` (pathology group) are one value or a {patient: value} map;
    clinical indices need the first, per-group comparisons the second. Without `labels`, every slice is
    marked unannotated.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
    n = len(images)
    ids = _per_slice(subject_ids, n, "subject_ids", dtype=str)
    phases_ = _per_slice(phases, n, "phases", dtype=str)
    if slice_index is None:
        order = np.zeros(n, dtype=np.int32)
        seen: dict[tuple[str, str], int] = {}
        for i, key in enumerate(zip(ids.tolist(), phases_.tolist())):
            order[i] = seen.get(key, 0)
            seen[key] = order[i] + 1
        slice_index = order
    index = _per_slice(slice_index, n, "slice_index", dtype=np.int32)
    pos = np.zeros(n, dtype=np.float32)
    for key in set(zip(ids.tolist(), phases_.tolist())):
        sel = (ids == key[0]) & (phases_ == key[1])
        lo, hi = index[sel].min(), index[sel].max()
        pos[sel] = (index[sel] - lo) / max(hi - lo, 1)
    meta: dict[str, dict[str, Any]] = {}
    for sid in dict.fromkeys(ids.tolist()):
        entry: dict[str, Any] = {}
        thick = thickness_mm.get(sid) if isinstance(thickness_mm, Mapping) else thickness_mm
        group = groups.get(sid) if isinstance(groups, Mapping) else groups
        if thick is not None:
            entry["thickness_mm"] = float(thick)
        if group is not None:
            entry["group"] = str(group)
        meta[sid] = entry
    has_label = labels is not None
    return SliceSet(images=images, labels=np.zeros(images.shape, np.uint8) if labels is None else labels,
                    subject_ids=ids, vendors=_per_slice(vendors, n, "vendors", dtype=str), phases=phases_,
                    slice_pos=pos, slice_index=index, has_label=np.full(n, has_label), spacing_mm=float(spacing_mm),
                    subject_meta=meta)


def load_cohort(path):
    """A cohort folder (cohort layout, ACDC, M&Ms, M&Ms-2 or DICOM) as a `Cohort`; bad input raises InputError."""
    from .io import read_cohort

    return read_cohort(Path(path))


def load_slices(source, size: int = 64, **preprocess) -> SliceSet:
    """A folder or a `Cohort` preprocessed into a SliceSet (crop around the heart, `size` px, normalised)."""
    from .core.cohort import Cohort
    from .preprocess import PreprocessConfig, cohort_to_slices

    cohort = source if isinstance(source, Cohort) else load_cohort(source)
    return cohort_to_slices(cohort, PreprocessConfig(size=size, **preprocess))


def audit(train, holdout, synthetic, *, test=None, generator=None, groups=None, thresholds=None, options=None,
          seed: int = 0, size: int = 64, device: str = "cpu", quiet: bool = True, out=None):
    """Audit `synthetic` against the real `train` and `holdout` patients; returns the typed `AuditReport`.

    Each cohort is a SliceSet, a Cohort or a folder (preprocessed at `size` px, or at the generator's own
    preprocessing when it has one). `generator` is anything with `membership_scores` and `model_card` (the
    project's generators, an adapter of `generators.adapters`, or your own class) and enables the white-box
    attack. `groups` limits the auditors ("privacy", "fidelity", "utility"); `thresholds` overrides defaults by
    check name; `options` sets auditor options. With `out`, audit.json, audit.html and junit.xml are written there.
    """
    from .audit import run_audit, write_audit

    from .preprocess import PreprocessConfig

    known = set(PreprocessConfig.__dataclass_fields__)
    config = {k: v for k, v in (getattr(generator, "preprocess", None) or {}).items() if k in known}
    config.setdefault("size", size)

    def as_slices(x):
        if x is None or isinstance(x, SliceSet):
            return x
        return load_slices(x, **config)

    report = run_audit(as_slices(train), as_slices(holdout), as_slices(synthetic), test=as_slices(test),
                       generator=generator, model_card=getattr(generator, "model_card", None), groups=groups,
                       thresholds=thresholds, seed=seed, options=options, quiet=quiet, device=device)
    if out is not None:
        write_audit(report, Path(out))
    return report


def release(spec, quiet: bool = True):
    """The whole gate from a spec file (path) or a `ReleaseSpec`; returns the `ReleaseOutcome` (status released,
    blocked or error; its checks; the release and audit folders)."""
    from .release import run_release
    from .spec import ReleaseSpec, load_spec

    return run_release(spec if isinstance(spec, ReleaseSpec) else load_spec(spec), quiet=quiet)
