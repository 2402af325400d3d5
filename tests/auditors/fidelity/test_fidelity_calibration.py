"""At the recommended size (100 train / 100 holdout / 100 synthetic phantom patients), fresh real patients PASS
the texture, spectrum, discriminator and intensity checks, and each degradation FAILS them (slow: phantoms).

The 20-draw measurement behind the defaults is in docs/fidelity-utility-checks.md; this runs two draws.
"""
import numpy as np
import pytest

from auditors.base import AuditContext, Verdict
from auditors.fidelity.degradations import KINDS, degrade
from auditors.fidelity.discriminator import DiscriminatorAuditor
from auditors.fidelity.intensity import IntensityAuditor
from auditors.fidelity.texture import TextureAuditor
from cmri_release.phantom import make_phantom
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices

pytestmark = [pytest.mark.slow, pytest.mark.heavy]
AUDITORS = (TextureAuditor, DiscriminatorAuditor, IntensityAuditor)


@pytest.fixture(scope="module")
def cohorts():
    config = PreprocessConfig(size=32)
    return {seed: cohort_to_slices(make_phantom(100, seed=seed), config) for seed in (0, 1, 2, 3)}


def _checks(train, holdout, synthetic, seed=0):
    ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=seed, quiet=True)
    return {c.name: c for a in AUDITORS for c in a().run(ctx).checks}


@pytest.mark.parametrize("holdout_seed,synthetic_seed", [(1, 2), (2, 3)])
def test_fresh_patients_pass(cohorts, holdout_seed, synthetic_seed):
    checks = _checks(cohorts[0], cohorts[holdout_seed], cohorts[synthetic_seed], seed=synthetic_seed)
    assert {n: (c.lower, c.upper) for n, c in checks.items() if c.verdict is not Verdict.PASS} == {}
    assert checks["fidelity.discriminator_auc"].plan["honest_pass_probability"] > 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_each_degradation_fails(cohorts, kind):
    checks = _checks(cohorts[0], cohorts[1], degrade(cohorts[2], kind))
    assert checks["fidelity.discriminator_auc"].verdict is Verdict.FAIL
    assert any(c.verdict is Verdict.FAIL for n, c in checks.items() if n != "fidelity.discriminator_auc") or \
        kind == "noise"  # 5% noise: the discriminator is the check that shows it (texture ratio ~1.6)
    assert np.isfinite(checks["fidelity.discriminator_auc"].lower)
