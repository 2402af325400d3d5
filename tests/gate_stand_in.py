"""A test-only privacy auditor with a real interval, for tests of the gate's mechanics (release, verify, reports).

Under the burden-of-proof rule no real auditor can show safety on the handful of patients these tests afford
(they are inconclusive there, by design); the gate's mechanics are tested with this stand-in instead, and the
real auditors' verdicts in their own tests at the sizes that can decide them.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from auditors import base
from auditors.base import AuditContext, AuditResult, Auditor

CHECK = "privacy.test_intensity_gap"


class IntensityGap(Auditor):
    """|mean synthetic - mean holdout| of per-patient mean intensity, bootstrapped over patients (seeded)."""

    name = "test_intensity_gap"
    group = "privacy"
    default_thresholds = {CHECK: (0.5, "<=", "test-only: synthetic and holdout intensities agree")}
    threads_seen: list[int] = []

    def run(self, ctx: AuditContext) -> AuditResult:
        import torch

        IntensityGap.threads_seen.append(torch.get_num_threads())

        def per_patient(s):
            return np.array([s.images[s.subject_ids == p].mean() for p in s.subjects])

        syn, hold = per_patient(ctx.synthetic), per_patient(ctx.holdout)
        rng = np.random.default_rng(ctx.seed)
        boot = [abs(rng.choice(syn, len(syn)).mean() - rng.choice(hold, len(hold)).mean()) for _ in range(200)]
        lo, hi = np.quantile(boot, [0.05, 0.95])
        est = abs(syn.mean() - hold.mean())
        return AuditResult(self.name, self.group, checks=[self.check(ctx, CHECK, est, min(lo, est), max(hi, est),
                                                                     0.9, details="test auditor")])


def install() -> None:
    """The registry holds the stand-in alone for the rest of this process (a CLI child of a test)."""
    base.AUDITORS.clear()
    base.AUDITORS[IntensityGap.name] = IntensityGap


# A `cmri-release` child process that gates on the stand-in (for tests that kill and rerun real processes).
CLI_STAND_IN = ("import sys; sys.path.insert(0, {tests!r}); import gate_stand_in; gate_stand_in.install(); "
                "from cmri_release.cli import main; sys.exit(main())")


@contextlib.contextmanager
def only_the_stand_in():
    """The registry holds the stand-in alone while the block runs (module-scoped fixtures cannot monkeypatch)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(base, "AUDITORS", {IntensityGap.name: IntensityGap})
    try:
        yield
    finally:
        mp.undo()
