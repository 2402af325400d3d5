"""Fixtures for the privacy auditor tests: tiny patients built in memory, perturbed copies, phantom splits."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cmri_release.core.sliceset import SliceSet


def blob_slices(n_patients: int, slices: int = 4, size: int = 16, seed: int = 0, prefix: str = "p",
                noise: float = 0.05) -> SliceSet:
    """Patients as smooth random patterns; a patient's slices are small variations of its own pattern."""
    rng = np.random.default_rng(seed)
    images, ids = [], []
    for p in range(n_patients):
        base = ndimage.gaussian_filter(rng.standard_normal((size, size)), 2.0)
        for s in range(slices):
            drift = ndimage.gaussian_filter(rng.standard_normal((size, size)), 2.0)
            images.append(base + 0.3 * drift + noise * rng.standard_normal((size, size)))
            ids.append(f"{prefix}{p:03d}")
    n = len(images)
    return SliceSet(images=np.stack(images).astype(np.float32), labels=np.zeros((n, size, size), np.uint8),
                    subject_ids=np.array(ids), vendors=np.full(n, "A"), phases=np.full(n, "ED"),
                    slice_pos=np.tile(np.linspace(0, 1, slices), n_patients), slice_index=np.tile(np.arange(slices),
                                                                                                   n_patients),
                    has_label=np.zeros(n, bool), spacing_mm=2.5)


def perturbed_copies(slices: SliceSet, seed: int = 0, prefix: str = "copy-", max_shift: float = 1.0,
                     max_rotation: float = 5.0, noise: float = 0.03) -> SliceSet:
    """A 'synthetic' cohort that copies every given patient under a small shift, rotation, rescaling and noise."""
    rng = np.random.default_rng(seed)
    images = []
    for image in slices.images:
        x = ndimage.rotate(image, rng.uniform(-max_rotation, max_rotation), reshape=False, order=1, mode="nearest")
        x = ndimage.shift(x, rng.uniform(-max_shift, max_shift, 2), order=1, mode="nearest")
        x = x * rng.uniform(0.9, 1.1) + noise * float(image.std()) * rng.standard_normal(x.shape)
        images.append(x.astype(np.float32))
    return SliceSet(images=np.stack(images), labels=slices.labels, subject_ids=np.char.add(prefix, slices.subject_ids),
                    vendors=slices.vendors, phases=slices.phases, slice_pos=slices.slice_pos,
                    slice_index=slices.slice_index, has_label=slices.has_label, spacing_mm=slices.spacing_mm,
                    subject_meta={prefix + k: v for k, v in slices.subject_meta.items()})


def with_copied_slices(fresh: SliceSet, source: SliceSet, every: int, prefix: str) -> SliceSet:
    """Each fresh patient with every `every`-th slice (and its label map) replaced by the slice of the same rank of
    one source patient, patient for patient."""
    parts = []
    for j, (f_id, s_id) in enumerate(zip(fresh.subjects, source.subjects)):
        f, s = fresh.for_subjects([f_id]), source.for_subjects([s_id])
        copied = np.arange(len(f)) % every == 0
        copied &= np.arange(len(f)) < len(s)
        images, labels = f.images.copy(), f.labels.copy()
        images[copied], labels[copied] = s.images[np.flatnonzero(copied)], s.labels[np.flatnonzero(copied)]
        parts.append(SliceSet(images=images, labels=labels, subject_ids=np.full(len(f), f"{prefix}{j}"),
                              vendors=f.vendors, phases=f.phases, slice_pos=f.slice_pos, slice_index=f.slice_index,
                              has_label=f.has_label, spacing_mm=f.spacing_mm))
    return SliceSet.concat(parts)


@pytest.fixture(scope="session")
def phantom_slices():
    """Real patients (24 of one phantom seed, split 12 train / 12 holdout) and 30 new patients of another seed."""
    from cmri_release.phantom import make_phantom
    from cmri_release.preprocess import PreprocessConfig, cohort_to_slices

    config = PreprocessConfig(size=32)
    real = cohort_to_slices(make_phantom(24, seed=11), config)
    new = cohort_to_slices(make_phantom(30, seed=12), config)
    subjects = real.subjects
    return real.for_subjects(subjects[0::2]), real.for_subjects(subjects[1::2]), new


@pytest.fixture
def blobs():
    """`blobs(n_patients, slices=4, size=16, seed=0, prefix='p')` -> SliceSet of independent random patients."""
    return blob_slices


@pytest.fixture
def copies():
    """`copies(slices, seed=0, prefix='copy-')` -> perturbed copies of every given patient."""
    return perturbed_copies


def _flagged(result) -> set:
    """The synthetic patients above the lower copy bar: shown copies and those between the bars."""
    return set(result.metrics["confirmed_copies"]) | set(result.metrics["unsettled_copies"])


def _part_alone_confirms(audit, train, holdout, synthetic, copies: set, part: str, switch_off: dict, at_least: int,
                         shown_at_least: int = 1, **options) -> None:
    """With the part switched off (`switch_off`), no copy is flagged; with it on, the release fails, the flagged
    patients (above the lower bar) are copies only, at least `at_least` of them, at least `shown_at_least` shown
    copies (above the exact bar of a small holdout), and `part` flagged every one.
    `audit(train, holdout, synthetic, **options)` -> (checks by name, result)."""
    from auditors.base import Verdict

    _, without = audit(train, holdout, synthetic, **switch_off, **options)
    assert not _flagged(without) & copies
    checks, result = audit(train, holdout, synthetic, **options)
    flagged, shown = _flagged(result), set(result.metrics["confirmed_copies"])
    assert checks["privacy.confirmed_copies"].verdict is Verdict.FAIL
    assert flagged <= copies and len(flagged) >= at_least and len(shown) >= shown_at_least, (shown, flagged)
    found = result.metrics["near_copies"][part]
    assert {synthetic.subjects[i] for i in found["confirmed"] + found["unsettled"]} == flagged


@pytest.fixture
def part_alone_confirms():
    """`part_alone_confirms(audit, train, holdout, synthetic, copies, part, switch_off, at_least, **options)`."""
    return _part_alone_confirms


@pytest.fixture
def slice_copies():
    """`slice_copies(fresh, source, every, prefix)` -> each fresh patient with every `every`-th slice copied from
    one source patient."""
    return with_copied_slices
