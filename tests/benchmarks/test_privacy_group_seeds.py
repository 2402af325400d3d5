"""benchmarks/privacy_group_seeds.py: the honest cohorts it audits and the per-part scores it keeps for studying the
copy-confirmation rule offline."""
from __future__ import annotations

import numpy as np

from auditors.privacy.memorisation import CONFIRM_ALPHA, TAU_ALPHA
from auditors.privacy.calibration import fit_tail
from cmri_release.audit import run_audit


def test_the_test_split_is_drawn_after_train_and_holdout(load_benchmark):
    bench = load_benchmark("privacy_group_seeds")
    train, hold, syn, test = bench.with_test(0, 2, 6, 8, 4)
    plain = bench.cohorts(0, 2, 6, 8)
    assert all(np.array_equal(a.images, b.images) for a, b in zip((train, hold, syn), plain))
    assert not set(test.subjects) & (set(train.subjects) | set(hold.subjects))
    assert len(test.subjects) == 4 and sum(s.startswith("copy-") for s in syn.subjects) == 2
    assert bench.with_test(0, 0, 6, 8)[3] is None


def test_the_recorder_keeps_every_confirming_part_of_both_copy_auditors(load_benchmark):
    bench = load_benchmark("privacy_group_seeds")
    train, hold, syn, test = bench.with_test(1, 2, 6, 12, 4)
    options = {"copy_registration": False, "copy_warp": False, "copy_translation_max_rotation": 0}
    with bench.PartRecorder() as recorder:
        report = run_audit(train, hold, syn, test=test, groups=["privacy"], seed=0, quiet=True, options=options)
    from auditors.privacy import memorisation, real_copies
    assert memorisation.near_copies is recorder.original is real_copies.near_copies  # put back
    parts = recorder.parts
    assert {k.split(".")[0] for k in parts} == {"memorisation", "real_copies"}
    assert len(parts["memorisation.robust.null"]) == len(hold.subjects)
    assert len(parts["real_copies.robust.null"]) == len(train.subjects)  # the training patients are its null
    assert len(parts["real_copies.robust.synthetic"]) == len(syn.subjects)
    # the recorded scores reproduce the recorded bar of the auditor
    metrics = next(r.metrics for r in report.results if r.auditor == "nn_memorisation")
    null = parts["memorisation.robust.null"]
    tail = fit_tail(null, 1.0 - CONFIRM_ALPHA / len(syn.subjects), 1.0 - TAU_ALPHA)
    assert np.isclose(metrics["near_copies"]["robust"]["confirm_threshold"], max(tail.tau_high, null.max()))
    # the two exact copies score as copies against the training patients, not against the holdout and test
    copies = np.array([s.startswith("copy-") for s in syn.subjects])
    assert parts["memorisation.robust.synthetic"][copies].min() > 0.99
    assert parts["real_copies.robust.synthetic"][copies].max() < 0.99
