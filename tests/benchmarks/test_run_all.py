"""benchmarks/run_all.py: its command line, the step commands it builds, and the stage table it reads back from the
release's own summary. Speed is measured by the benchmarks, never asserted here."""
from __future__ import annotations

import sys

import pytest

from cmri_release.commands.release_cmd import format_outcome
from cmri_release.release import ReleaseOutcome



@pytest.fixture(scope="module")
def run_all(load_benchmark):
    return load_benchmark("run_all")


def test_quick_and_only_are_parsed(run_all):
    args = run_all.parse_args(["--quick", "--only", "dp, demo"])
    assert args.quick and args.steps == ["dp", "demo"]
    assert run_all.parse_args([]).steps == list(run_all.STEPS)


@pytest.mark.parametrize("only", ["nope", "dp,nope", ","])
def test_unknown_step_is_refused(run_all, only, capsys):
    with pytest.raises(SystemExit) as exc:
        run_all.parse_args(["--only", only])
    assert exc.value.code == 2
    assert "known: neighbours, dp, generators, demo" in capsys.readouterr().err


def test_quick_shrinks_every_step(run_all, tmp_path):
    for step in run_all.STEPS:
        quick, _ = run_all.step_commands(step, True, tmp_path)
        full, _ = run_all.step_commands(step, False, tmp_path)
        assert quick != full, step
        assert all(c[0] == sys.executable for c in quick + full)
    quick, out = run_all.step_commands("demo", True, tmp_path)
    assert out is None and quick[0][-3:-1] == ["release", str(tmp_path / "quick.toml")]
    from cmri_release.spec import load_spec
    # the reduced spec is a valid release spec (registries given: importing torch is not what is tested)
    spec = load_spec(tmp_path / "quick.toml", known_checks={}, known_generators=("flow",))
    assert spec.generator.minutes == 0.5 and spec.export.out == (tmp_path / "release").resolve()


def test_stage_table_is_read_back_from_the_release_summary(run_all):
    stages = {"data": 23.5, "train": 180.02, "synthesise": 4.0, "audit": 61.25, "audit report": 1.5}
    text = format_outcome(ReleaseOutcome(status="blocked", stage_seconds=stages, message="x = 1"))
    assert run_all.parse_stage_table(text) == pytest.approx({**{k: round(v, 1) for k, v in stages.items()},
                                                            "total": round(sum(stages.values()), 1)})
