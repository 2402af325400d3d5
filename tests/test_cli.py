import os
import subprocess
import sys

from click.testing import CliRunner

from cmri_release.cli import main

COMMANDS = {"phantom", "inspect", "train", "synthesize", "audit", "release", "demo"}


def test_every_command_is_registered_and_imports():
    from click import Context

    ctx = Context(main)
    assert COMMANDS <= set(main.list_commands(ctx))
    for name in COMMANDS:
        assert main.get_command(ctx, name).name == name


def test_help_and_version():
    runner = CliRunner()
    assert runner.invoke(main, ["--help"]).exit_code == 0
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and "cmri-release" in result.output


def test_missing_cohort_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_unexpected_errors_are_one_line_with_the_root_cause(monkeypatch, tmp_path):
    from cmri_release.commands import inspect_cmd

    def boom(path, **kwargs):
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise RuntimeError("write failed\nTraceback (most recent call last):\n  lots of lines") from exc

    monkeypatch.setattr(inspect_cmd, "inspect_cohort", boom)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "OSError" in lines[0] and "No space left" in lines[0]


def _policy_after_cli(env_extra: dict) -> str:
    code = ("import os, sys\nfrom cmri_release import cli\nsys.argv = ['cmri-release', '--version']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\nprint(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | env_extra
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()[-1]


def test_openmp_threads_sleep_unless_the_user_chose_a_policy():
    assert _policy_after_cli({}) == "PASSIVE"
    assert _policy_after_cli({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    assert _policy_after_cli({"GOMP_SPINCOUNT": "10000"}) == "None"


def test_openmp_policy_is_left_alone_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401 - loaded: the runtime has read its environment already

    from cmri_release.cli import idle_threads_sleep
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    idle_threads_sleep()
    assert "OMP_WAIT_POLICY" not in os.environ
