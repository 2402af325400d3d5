"""benchmarks/bench_utility.py and bench_unet.py: the seed summary, the experiment plan, and (with the optional monai)
a smoke run of the standard U-Net. Speed and the measured figures live in benchmarks/README.md, never asserted here."""
from __future__ import annotations

import numpy as np
import pytest

from tests.auditors.conftest import make_heart_slices


def test_summary_counts_verdicts_and_spreads_over_seeds(load_benchmark):
    bench = load_benchmark("bench_utility")
    audits = [{"checks": [{"name": "utility.x", "estimate": e, "lower": e - 0.01, "verdict": v}],
               "paired": [{"check": "utility.x", "scope": "all", "paired_sd": sd},
                          {"check": "utility.x", "scope": "LV", "paired_sd": 9.0}]}
              for e, v, sd in ((0.01, "pass", 0.02), (0.03, "inconclusive", 0.04), (0.02, "pass", 0.03))]
    s = bench.summarise(audits)["utility.x"]
    assert s["mean"] == pytest.approx(0.02) and s["sd_over_seeds"] == pytest.approx(0.01)
    assert s["verdicts"] == {"pass": 2, "inconclusive": 1, "fail": 0}
    assert s["paired_sd_mean"] == pytest.approx(0.03) and s["lower_min"] == pytest.approx(0.0)


def test_unet_experiments_pair_each_run_with_its_baseline(load_benchmark):
    bench = load_benchmark("bench_unet")
    real, syn, test = (make_heart_slices(n, seed=s, prefix=p) for n, s, p in ((10, 0, "r"), (6, 1, "s"), (6, 2, "t")))
    runs, pairs = bench.experiments(real, syn, test, 0.2, seed=0)
    assert len(pairs) == 5 and all(a in runs and b in runs for _, a, b in pairs)
    data, on = runs["LOVO B + synthetic B"]
    assert set(data.vendor_names) == {"A", "B", "C"} and set(on.vendor_names) == {"B"}
    assert (data.vendors == "B").sum() == (syn.vendors == "B").sum()  # vendor B only from the synthetic cohort
    assert len(runs["low data"][0].subjects) == 3  # stratified: one per vendor


def test_standard_unet_trains_and_predicts_label_maps(load_benchmark):
    pytest.importorskip("monai")
    bench = load_benchmark("bench_unet")
    data = make_heart_slices(2, seed=0)
    model = bench.train(data, steps=2, batch=4, seed=0, channels=(8, 16, 32))
    pred = bench.predict(model, data.images)
    assert pred.shape == data.labels.shape and pred.dtype == np.uint8 and pred.max() <= 3
