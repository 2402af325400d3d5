"""benchmarks/bench_sampling_quality.py: the quick run end to end, its table against the solver formulas, the
equal-quality choice recomputed from the table, and its ratio against the fidelity auditor's own check. Speed is
measured by the benchmark, never asserted here."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest



@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_sampling_quality")


@pytest.fixture(scope="module")
def quick_report(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("sampling") / "sampling.json"
    assert bench.main([str(out), "--quick", "--quiet"]) == 0
    return json.loads(out.read_text())


def expected_evaluations(solver: str, steps: int) -> int:
    # Heun skips its corrector on the last step; Euler and DDIM take one evaluation per step
    return {"heun": 2 * steps - 1, "euler": steps, "ddim": steps}[solver]


@pytest.mark.slow  # trains a generator; default run under 15 min on a slow 2-core machine (CI runs it)
def test_quick_run_writes_every_field(bench, quick_report):
    r = quick_report
    assert r["settings"]["quick"] and r["settings"]["patients"] == 8 and r["settings"]["epochs"] == 1
    assert set(r["phase_seconds"]) == {"data", "train_flow", "train_ddpm", "segmenter", "sampling_and_scoring"}
    assert r["data"]["train_patients"] + r["data"]["holdout_patients"] == 8
    # the same training compute for both generators
    assert r["training"]["flow"]["steps"] == r["training"]["ddpm"]["steps"] > 0
    assert r["training"]["flow"]["parameters"] == r["training"]["ddpm"]["parameters"]
    assert [(g["generator"], g["solver"], g["steps"]) for g in r["table"]] == list(bench.QUICK_SETTINGS)
    for row in r["table"]:
        assert row["evaluations_per_slice"] == expected_evaluations(row["solver"], row["steps"]), row
        assert row["slices"] == r["data"]["holdout_slices"]
        assert row["slices_per_s"] > 0 and row["sample_seconds"] > 0
        assert math.isfinite(row["mask_dice_ratio"]) and 0.0 <= row["mask_dice_ratio"] <= 1.5, row
        assert row["mask_dice_ratio"] == pytest.approx(row["synthetic_dice"] / r["segmenter"]["real_holdout_dice"],
                                                       abs=2e-3)


@pytest.mark.slow  # trains a generator; default run under 15 min on a slow 2-core machine (CI runs it)
def test_the_chosen_setting_is_the_cheapest_reaching_the_target(quick_report):
    rows, eq = quick_report["table"], quick_report["equal_quality"]
    best = {name: max(r["mask_dice_ratio"] for r in rows if r["generator"] == name) for name in ("flow", "ddpm")}
    target = 0.98 * min(best.values())
    assert eq["target_ratio"] == pytest.approx(target, abs=1e-4)
    for name in ("flow", "ddpm"):
        chosen = eq["chosen"][name]
        assert chosen["generator"] == name and chosen["mask_dice_ratio"] >= eq["target_ratio"]
        cheaper = [r for r in rows if r["generator"] == name and r["evaluations_per_slice"] <
                   chosen["evaluations_per_slice"]]
        assert all(r["mask_dice_ratio"] < eq["target_ratio"] for r in cheaper), (name, cheaper)
    assert eq["speed_ratio_flow_over_ddpm"] == pytest.approx(
        eq["chosen"]["flow"]["slices_per_s"] / eq["chosen"]["ddpm"]["slices_per_s"], rel=1e-2)


def test_equal_quality_on_a_known_table(bench):
    def row(gen, solver, steps, ratio, speed):
        return {"generator": gen, "solver": solver, "steps": steps, "mask_dice_ratio": ratio, "slices_per_s": speed,
                "evaluations_per_slice": expected_evaluations(solver, steps)}

    rows = [row("flow", "heun", 2, 0.80, 100.0),  # 3 evals, below the target
            row("flow", "euler", 4, 0.90, 70.0),  # 4 evals: the cheapest reaching it
            row("flow", "heun", 8, 0.95, 20.0),  # flow's best
            row("flow", "euler", 16, 0.93, 18.0),
            row("ddpm", "ddim", 5, 0.70, 60.0),
            row("ddpm", "ddim", 10, 0.91, 30.0),  # ddpm's best sets the target: 0.98 x 0.91 = 0.8918
            row("ddpm", "ddim", 20, 0.90, 15.0)]
    eq = bench.equal_quality(rows)
    assert eq["best_ratio"] == {"flow": 0.95, "ddpm": 0.91}
    assert eq["target_ratio"] == pytest.approx(0.8918)
    assert (eq["chosen"]["flow"]["solver"], eq["chosen"]["flow"]["steps"]) == ("euler", 4)
    assert eq["chosen"]["ddpm"]["steps"] == 10
    assert eq["speed_ratio_flow_over_ddpm"] == pytest.approx(70 / 30, abs=1e-3)
    assert eq["evaluations_ratio_ddpm_over_flow"] == pytest.approx(10 / 4)
    # on equal evaluations the faster measured setting wins
    tie = [row("flow", "euler", 3, 0.9, 50.0), row("flow", "heun", 2, 0.9, 80.0)]
    assert bench.cheapest_reaching(tie, "flow", 0.85)["solver"] == "heun"
    assert bench.cheapest_reaching(tie, "flow", 0.95) is None
    with pytest.raises(ValueError, match="ddpm"):
        bench.equal_quality([row("flow", "euler", 2, 0.9, 1.0), row("ddpm", "ddim", 5, float("nan"), 1.0)])


def test_ratio_is_the_fidelity_auditors_check(bench):
    """The benchmark's ratio for a setting equals `fidelity.mask_dice_ratio` from the auditor on the same slices."""
    from auditors.fidelity.mask_consistency import MaskConsistencyAuditor, score_slices
    from auditors.segmentation.train import real_train_segmenter
    from generators import create_generator

    train, holdout = bench.split_cohort(6, 16, seed=0)
    assert not set(train.subjects) & set(holdout.subjects)
    gen = create_generator("flow", network="compact")
    gen.fit(train, epochs=1, seed=0, quiet=True)
    ctx = bench.reference_context(train, holdout, segmenter_epochs=1.0, seed=0)
    segmenter = real_train_segmenter(ctx)
    real = score_slices(segmenter, holdout)[0]["dice"]["mean"]
    row = bench.measure_setting(gen, "euler", 2, holdout, segmenter, real, warm_up=False)
    assert row["evaluations_per_slice"] == 2
    images = gen.sample(holdout.labels, holdout.vendors, seed=bench.SAMPLE_SEED)
    ctx.synthetic = dataclasses.replace(holdout, images=images)
    result = MaskConsistencyAuditor().run(ctx)  # reuses the cached segmenter, as in an audit
    check = next(c for c in result.checks if c.name == "fidelity.mask_dice_ratio")
    assert row["mask_dice_ratio"] == pytest.approx(check.value, abs=1e-4)


def test_sampler_settings_are_read_at_call_time(bench):
    from generators import create_generator

    flow, ddpm = create_generator("flow"), create_generator("ddpm")
    bench.configure_sampler(flow, "euler", 3)
    bench.configure_sampler(ddpm, "ddim", 7)
    assert flow._evaluations_per_sample() == 3 and ddpm._evaluations_per_sample() == 7
    with pytest.raises(ValueError, match="DDIM"):
        bench.configure_sampler(ddpm, "heun", 2)


def test_defaults_and_quick_sizes(bench, tmp_path):
    from auditors.segmentation.train import DEFAULT_UTILITY_EPOCHS

    full = bench.parse_args([str(tmp_path / "o.json")])
    assert (full.patients, full.epochs, full.size) == (24, 5, 32)
    assert full.segmenter_epochs == DEFAULT_UTILITY_EPOCHS  # the audit's own segmenter budget
    quick = bench.parse_args([str(tmp_path / "o.json"), "--quick", "--epochs", "2"])
    assert (quick.patients, quick.epochs) == (8, 2)
    with pytest.raises(SystemExit):
        bench.parse_args([str(tmp_path / "o.json"), "--patients", "3"])
