from click.testing import CliRunner

from cmri_release.cli import main

COMMANDS = {"phantom", "inspect", "train", "synthesize", "audit", "release", "demo"}


def test_every_command_is_registered():
    assert COMMANDS <= set(main.commands)


def test_help_and_version():
    runner = CliRunner()
    assert runner.invoke(main, ["--help"]).exit_code == 0
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and "cmri-release" in result.output


def test_missing_cohort_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
