"""The auditor that docs/extending.md walks through, added exactly as it says (here in a test, not shipped): one
class with a name, a group, its checks' default thresholds and its options, registered, then run by a real audit
next to the built-in privacy auditors, with its contract test."""
from __future__ import annotations

import numpy as np
import pytest

from auditor_contract import assert_follows_the_contract
from auditors.base import AUDITORS, OPTIONS, AuditContext, AuditResult, Auditor, Option, register_auditor
from cmri_release.audit import run_audit
from cmri_release.core.sliceset import SliceSet

FAST = {"feature_spaces": ["pixels"], "pixel_size": 16, "mia_bootstrap": 200}


class ExactCopies(Auditor):
    """Synthetic slices that equal a training slice pixel for pixel (within a tolerance): a copy, not a sample."""

    name = "exact_copies"
    group = "privacy"
    default_thresholds = {"privacy.exact_copy_rate": (0.0, "<=", "synthetic slices identical to a training slice")}
    options = (Option("exact_copy_tolerance", float, 1e-6, "largest pixel difference that still counts as a copy",
                      low=0.0, high=1.0),)

    def run(self, ctx: AuditContext) -> AuditResult:
        tolerance = ctx.option("exact_copy_tolerance")
        train = ctx.train.images.reshape(len(ctx.train), -1)
        copies = sum(bool((np.abs(train - s.ravel()).max(axis=1) <= tolerance).any()) for s in ctx.synthetic.images)
        rate = copies / len(ctx.synthetic)
        check = self.exact_check(ctx, "privacy.exact_copy_rate", rate,
                                 details=f"{copies} of {len(ctx.synthetic)} synthetic slices")
        return AuditResult(self.name, self.group, metrics={"copies": copies, "rate": rate}, checks=[check])


@pytest.fixture()
def registered():
    register_auditor(ExactCopies)
    try:
        yield ExactCopies
    finally:  # the registry is global: leave it as the other tests expect it
        AUDITORS.pop(ExactCopies.name)
        OPTIONS.pop("exact_copy_tolerance")


def patients(n, seed, prefix, size=16, slices=3) -> SliceSet:
    images = np.random.default_rng(seed).random((n * slices, size, size)).astype(np.float32)
    count = len(images)
    return SliceSet(images=images, labels=np.zeros(images.shape, np.uint8),
                    subject_ids=np.repeat([f"{prefix}{i}" for i in range(n)], slices), vendors=np.full(count, "A"),
                    phases=np.full(count, "ED"), slice_pos=np.zeros(count), slice_index=np.tile(np.arange(slices), n),
                    has_label=np.zeros(count, bool), spacing_mm=2.5)


def test_the_example_auditor_runs_in_an_audit_and_gates_it(registered):
    train, holdout, synthetic = patients(6, 0, "t"), patients(6, 1, "h"), patients(6, 2, "s")
    clean = run_audit(train, holdout, synthetic, groups=["privacy"], options=FAST, quiet=True)
    result = next(r for r in clean.results if r.auditor == "exact_copies")
    assert_follows_the_contract(result, registered)
    assert result.checks[0].passed and result.metrics["copies"] == 0
    copied = SliceSet(**{**synthetic.__dict__, "images": np.concatenate([train.images[:3], synthetic.images[3:]])})
    leaky = run_audit(train, holdout, copied, groups=["privacy"], quiet=True,
                      options={**FAST, "exact_copy_tolerance": 0.0})
    check = next(c for c in leaky.checks if c.name == "privacy.exact_copy_rate")
    assert not check.passed and check.value == pytest.approx(3 / len(copied)) and leaky.verdict == "fail"
