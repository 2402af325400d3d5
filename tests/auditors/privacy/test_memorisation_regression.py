"""Regression on realistic phantom cohorts (100 train / 100 holdout / 100 synthetic patients, 32 px): copies of
training patients fail the release, fresh patients of the same population pass. Slow: runs in CI."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from auditors.base import AuditContext, Verdict
from auditors.privacy.memorisation import NNMemorisation
from cmri_release.core.sliceset import SliceSet

pytestmark = [pytest.mark.slow, pytest.mark.heavy]
OPTIONS = {"feature_spaces": ["pixels"]}


@pytest.fixture(scope="module")
def cohorts():
    from cmri_release.phantom import make_phantom
    from cmri_release.preprocess import PreprocessConfig, cohort_to_slices

    config = PreprocessConfig(size=32)
    return tuple(cohort_to_slices(make_phantom(100, seed=s), config) for s in (21, 22, 23))


def altered(slices: SliceSet, seed: int, shift=0.0, rotation=0.0, gain=1.0, gamma=None, noise=0.0) -> SliceSet:
    rng = np.random.default_rng(seed)
    out = []
    for image in slices.images:
        x = np.clip(image, 0, None) ** rng.uniform(*gamma) if gamma else image
        x = ndimage.rotate(x, rng.choice([-1, 1]) * rotation, reshape=False, order=1, mode="nearest") if rotation else x
        x = ndimage.shift(x, rng.choice([-1, 1], 2) * shift, order=1, mode="nearest") if shift else x
        out.append((x * gain + noise * float(image.std()) * rng.standard_normal(x.shape)).astype(np.float32))
    return SliceSet(images=np.stack(out), labels=slices.labels, subject_ids=np.char.add("copy-", slices.subject_ids),
                    vendors=slices.vendors, phases=slices.phases, slice_pos=slices.slice_pos,
                    slice_index=slices.slice_index, has_label=slices.has_label, spacing_mm=slices.spacing_mm)


def _audit(train, holdout, synthetic):
    ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0, quiet=True, options=OPTIONS)
    result = NNMemorisation().run(ctx)
    return {c.name: c for c in result.checks}, result


CASES = {  # fraction of copied training patients, alteration
    "exact copies of 20%": (0.2, {}),
    "20% shifted by one pixel with a 10% gain and faint noise": (0.2, {"shift": 1, "gain": 1.1, "noise": 0.05}),
    "40% lightly altered (3 px, 4 degrees, gamma, noise)": (0.4, {"shift": 3, "rotation": 4, "gamma": (0.7, 1.4),
                                                                   "noise": 0.1}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_copies_fail(cohorts, case):
    train, holdout, fresh = cohorts
    fraction, how = CASES[case]
    n = int(fraction * 100)
    chosen = np.random.default_rng(1).choice(train.subjects, n, replace=False)
    synthetic = SliceSet.concat([altered(train.for_subjects(chosen), 2, **how),
                                 fresh.for_subjects(fresh.subjects[:100 - n])])
    checks, result = _audit(train, holdout, synthetic)
    assert checks["privacy.confirmed_copies"].verdict is Verdict.FAIL
    # 20 flagged of 100 cannot put the rate's lower bound above 0.2 (measured 0.23 [0.14, 0.32]): the rate blocks as
    # inconclusive there and fails at 40%; the confirmed copies are what show the leak
    assert checks["privacy.near_copy_rate"].verdict is not Verdict.PASS
    confirmed = set(result.metrics["confirmed_copies"])
    assert confirmed <= {"copy-" + s for s in chosen}  # no fresh patient is ever confirmed
    robust = result.metrics["near_copies"]["robust"]
    assert robust["near_copies"] >= 0.85 * n and robust["baseline_rate"] <= 0.03


def test_fresh_patients_pass(cohorts):
    train, holdout, fresh = cohorts
    checks, result = _audit(train, holdout, fresh)
    assert all(c.verdict is Verdict.PASS for c in checks.values()), {k: c.reason for k, c in checks.items()}
