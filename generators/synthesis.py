"""Synthesise a cohort: label maps from the mask generator (or a given cohort), images from the image generator.

Synthetic subjects are named `syn-<seed>-0001`, ... so nothing of a real id survives, and carry metadata drawn
from their vendor's aggregate training statistics (median intensity mapping, slice thickness, frame counts),
never one patient's. With `masks_from` the label maps of that (already preprocessed) cohort are used instead, for
example holdout masks for an audit; their subjects get fresh ids too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cmri_release.core.cohort import PHASES
from cmri_release.core.errors import CmriError
from cmri_release.core.parallel import map_jobs
from cmri_release.core.sliceset import SliceSet
from cmri_release.core.splits import largest_remainder

from .checkpoint import load_generator

DEFAULT_THICKNESS_MM = 8.0
DEFAULT_FRAMES = 25


def synthetic_id(seed: int, number: int) -> str:
    return f"syn-{seed}-{number:04d}"


def _allocate(weights: dict[str, float], n: int) -> list[str]:
    """n items split across names in proportion to `weights` (largest remainder), in name order."""
    names = sorted(weights)
    w = np.array([weights[k] for k in names], dtype=np.float64)
    counts = largest_remainder(n, w / w.sum())
    return [name for name, c in zip(names, counts) for _ in range(c)]


def assign_vendors(gen, n: int, vendors, rng: np.random.Generator) -> list[str]:
    """The vendor of each synthetic subject: evenly over `vendors`, or the training mix when None."""
    if vendors:
        vendors = list(dict.fromkeys(vendors))
        unknown = [v for v in vendors if v not in gen.vendors]
        if unknown:
            raise CmriError(f"vendor(s) {', '.join(unknown)} not in this model; it knows {', '.join(gen.vendors)}")
        names = _allocate({v: 1.0 for v in vendors}, n)
    else:
        stats = gen.vendor_stats.get("vendors", {})
        names = _allocate({v: float(stats.get(v, {}).get("n_subjects", 1)) for v in gen.vendors}, n)
    return [names[i] for i in rng.permutation(n)]


def subject_meta(gen, vendor: str, group: str, source: str) -> dict:
    """Metadata of one synthetic subject from its vendor's aggregate statistics."""
    stats = gen.vendor_stats.get("vendors", {}).get(vendor, {})
    population = gen.vendor_stats.get("population", {})
    n_frames = int(round(stats.get("n_frames", DEFAULT_FRAMES)))
    es = int(min(max(stats.get("es_frame", round(0.4 * n_frames)), 2), n_frames))
    intensity = stats.get("intensity") or {"kind": "percentile", "low": 0.0, "high": 1.0}
    return {"vendor": vendor, "centre": "synthetic", "group": group,
            "thickness_mm": float(stats.get("thickness_mm", DEFAULT_THICKNESS_MM)), "n_frames": n_frames,
            "frame_index": {"ED": 1, "ES": es}, "intensity": dict(intensity),
            "height": population.get("height"), "weight": population.get("weight"),
            "synthetic": True, "masks": source}


def _stacks_from_masks(masks: SliceSet, n: int, rng: np.random.Generator) -> list[tuple[dict, str, str]]:
    """n subjects of `masks` (annotated at ED and ES) as {phase: (Z, H, W)}, the union of both phases' slices so
    the two volumes have the same depth (a slice one phase lacks is drawn as background there)."""
    lab = masks.labelled()
    usable = [s for s in lab.subjects if set(lab.phases[lab.subject_ids == s]) >= set(PHASES)]
    if n > len(usable):
        raise CmriError(f"the mask cohort holds {len(usable)} subjects annotated at ED and ES; cannot make {n} from them")
    chosen = [usable[i] for i in sorted(rng.permutation(len(usable))[:n])]
    out = []
    for sid in chosen:
        sel = lab.subject_ids == sid
        depth = np.unique(lab.slice_index[sel])
        stacks = {}
        for phase in PHASES:
            stack = np.zeros((len(depth), lab.size, lab.size), np.uint8)
            for i in np.flatnonzero(sel & (lab.phases == phase)):
                stack[np.searchsorted(depth, lab.slice_index[i])] = lab.labels[i]
            stacks[phase] = stack
        out.append((stacks, str(lab.vendors[sel][0]), str(lab.subject_meta.get(sid, {}).get("group", "unknown"))))
    return out


def synthesize(model, n_subjects: int, vendors=None, seed: int = 0, masks_from: SliceSet | None = None,
               quiet: bool = True) -> SliceSet:
    """A synthetic SliceSet of `n_subjects` new subjects (ED and ES stacks, labels and images)."""
    gen = load_generator(Path(model)) if isinstance(model, (str, Path)) else model
    if n_subjects < 1:
        raise CmriError(f"subjects must be at least 1, got {n_subjects}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    if masks_from is not None:
        if masks_from.size != gen.image_size:
            raise CmriError(f"the mask cohort's slices are {masks_from.size} px, the model's are {gen.image_size} px")
        picked = _stacks_from_masks(masks_from, n_subjects, rng)
        stacks = [p[0] for p in picked]
        groups = [p[2] for p in picked]
        if vendors:
            chosen_vendors = assign_vendors(gen, n_subjects, vendors, rng)
        else:
            chosen_vendors = [p[1] for p in picked]
            unknown = sorted(set(chosen_vendors) - set(gen.vendors))
            if unknown:
                raise CmriError(f"the mask cohort's subjects have vendor(s) {', '.join(unknown)} that this model does not know "
                                f"({', '.join(gen.vendors)}); choose vendors it knows")
        source = "given cohort"
    else:
        if gen.mask_model is None:
            raise CmriError(f"this model has no mask generator ({gen.mask_model_error or 'not fitted'}); "
                            f"give label maps (a mask cohort)")
        chosen_vendors = assign_vendors(gen, n_subjects, vendors, rng)
        sampled = gen.mask_model.sample(n_subjects, seed=int(np.random.SeedSequence([int(seed), 2]).generate_state(1)[0]),
                                        size=gen.image_size)
        stacks = [s.labels for s in sampled]
        groups = [s.group for s in sampled]
        source = "mask generator"
    # (number, label maps of both phases, stack depth, vendor, group) per subject
    jobs = [(number, np.concatenate([stack[p] for p in PHASES]), len(stack[PHASES[0]]), vendor, group)
            for number, (stack, vendor, group) in enumerate(zip(stacks, chosen_vendors, groups), start=1)]

    def images_of(job) -> np.ndarray:
        number, labels, depth, vendor, _ = job
        # One seed per subject: a subject's images do not depend on how many others are made, nor on which
        # thread makes them.
        subject_seed = int(np.random.SeedSequence([int(seed), 3, number]).generate_state(1)[0])
        return gen.sample(labels, vendor, seed=subject_seed, positions=np.tile(np.arange(depth), len(PHASES)))

    device = str(getattr(gen, "device", None) or "cpu")
    workers = None if getattr(gen, "parallel_sampling", False) else 1
    all_images = map_jobs(images_of, jobs, workers=workers, device=device, quiet=quiet, desc="synthesize")
    parts = {k: [] for k in ("images", "labels", "subject_ids", "vendors", "phases", "slice_pos", "slice_index")}
    meta = {}
    for (number, labels, depth, vendor, group), images in zip(jobs, all_images):
        sid = synthetic_id(seed, number)
        for phase in PHASES:
            z = np.arange(depth)
            parts["slice_index"].append(z)
            parts["slice_pos"].append(z / max(depth - 1, 1))
            parts["phases"].append(np.full(depth, phase))
        parts["images"].append(images)
        parts["labels"].append(labels)
        parts["subject_ids"].append(np.full(len(labels), sid))
        parts["vendors"].append(np.full(len(labels), vendor))
        meta[sid] = subject_meta(gen, vendor, group, source)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    spacing = float(gen.model_card.get("spacing_mm") or (gen.preprocess["fov_mm"] / gen.preprocess["size"]))
    return SliceSet(**arrays, has_label=np.ones(len(arrays["images"]), bool), spacing_mm=spacing, subject_meta=meta)
