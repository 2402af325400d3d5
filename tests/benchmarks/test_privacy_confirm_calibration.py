"""benchmarks/privacy_confirm_calibration.py: the standardised maximum, the rule's bar and the confirmed honest
patients, on score files with known content."""
from __future__ import annotations

import numpy as np

from auditors.privacy.calibration import fit_tail
from auditors.privacy.memorisation import CONFIRM_ALPHA, TAU_ALPHA, near_copies, Part
from auditors.privacy.calibration import patient_folds


def _write(folder, seed, parts):
    np.savez(folder / f"seed_{seed}.npz", **{f"{name}.{side}": v for name, (null, syn) in parts.items()
                                              for side, v in (("null", null), ("synthetic", syn))})


def test_normal_scores_follow_the_model_and_a_planted_copy_is_the_one_confirmed(tmp_path, load_benchmark):
    bench = load_benchmark("privacy_confirm_calibration")
    rng = np.random.default_rng(0)
    for seed in range(30):
        parts = {}
        for name in ("memorisation.robust", "real_copies.warped", "memorisation.pixels"):
            null, syn = np.tanh(1.3 + 0.15 * rng.standard_normal(100)), np.tanh(1.3 + 0.15 * rng.standard_normal(100))
            if seed == 7 and name == "real_copies.warped":
                syn[3] = 0.999  # a copy
            parts[name] = (null, syn)
        _write(tmp_path, seed, parts)
    s = bench.summarise(bench.load(tmp_path), draws=4000)
    assert s["pairs"] == 60  # memorisation.pixels only flags: not a confirming part
    assert s["confirmed_honest"] == ["seed 7: real_copies.warped"]
    # normal scores: the observed exceedances are the model's within sampling error (60 pairs)
    for level in ("2.5", "3.0"):
        e = s["exceedance"][level]
        assert abs(e["observed"] - e["model"]) < 0.2
    assert 3.9 < s["bar_sd"]["median"] < 4.7


def test_the_bar_and_the_maximum_are_those_of_the_rule(load_benchmark):
    bench = load_benchmark("privacy_confirm_calibration")
    rng = np.random.default_rng(1)
    null, syn = np.tanh(1.2 + 0.1 * rng.standard_normal(80)), np.tanh(1.2 + 0.1 * rng.standard_normal(50))
    syn[0] = np.tanh(1.2 + 0.1 * np.arctanh(null).std(ddof=1) / 0.1 * 6.0)
    found = near_copies(Part("robust", syn, null, syn, np.full(50, -1)), 50, patient_folds(80, 0))
    z = np.arctanh(null)
    bar_sd = (np.arctanh(found["confirm_threshold"]) - z.mean()) / z.std(ddof=1)
    assert np.isclose(bench.rule_bar(null, 50), bar_sd)
    tail = fit_tail(null, 1.0 - CONFIRM_ALPHA / 50, 1.0 - TAU_ALPHA)
    assert np.isclose(np.tanh(z.mean() + bar_sd * z.std(ddof=1)), max(tail.tau_high, null.max()))
    t = bench.standardised_max(null, syn)
    assert t > bench.rule_bar(null, 50) and found["confirmed"] == [0]  # the planted patient, 6 sds above the mean
