"""`--help`, `--version` and completion of command names start without importing torch (or any command)."""
import json
import logging
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from cmri_release import __version__
from cmri_release.cli import COMMANDS, main

HEAVY = ("torch", "numpy", "scipy", "nibabel", "generators", "auditors")


def _modules_after(args: list[str], env_extra: dict | None = None) -> tuple[str, set]:
    """Run the CLI in a fresh interpreter with `args`; return its output and the top-level modules it imported."""
    code = ("import sys, json\nfrom cmri_release.cli import main\n"
            "try:\n    main(%r, prog_name='cmri-release')\nexcept SystemExit:\n    pass\n"
            "print('\\nMODULES ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})))" % (args,))
    env = {**os.environ, **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    text, _, mods = out.stdout.rpartition("MODULES ")
    return text, set(json.loads(mods))


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_do_not_import_torch(args):
    text, modules = _modules_after(args)
    assert not modules & set(HEAVY), modules & set(HEAVY)
    if args == ["--version"]:
        assert __version__ in text
    else:
        assert all(name in text for name in COMMANDS)


def test_completion_of_command_names_does_not_import_torch():
    text, modules = _modules_after([], {"_CMRI_RELEASE_COMPLETE": "bash_complete", "COMP_WORDS": "cmri-release au",
                                        "COMP_CWORD": "1"})
    assert "audit" in text and "release" not in text
    assert not modules & set(HEAVY)


def test_registry_summaries_are_the_commands_docstrings():
    ctx = click.Context(main)
    for name, (_, summary) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command.name == name
        assert command.help.strip().splitlines()[0] == summary


def test_help_lists_every_command_with_its_summary():
    out = CliRunner().invoke(main, ["--help"]).output
    for name in COMMANDS:
        assert f"  {name}" in out


def test_cli_messages_go_through_the_cmri_release_logger(tmp_path):
    """Progress lines are log records: the CLI prints them bare on stderr, a pipeline can capture them."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("cmri_release")
    keep = Keep()
    logger.addHandler(keep)
    try:
        result = CliRunner().invoke(main, ["audit", "--train", str(tmp_path / "no"), "--holdout", str(tmp_path / "no"),
                                           "--synthetic", str(tmp_path / "no"), "--out", str(tmp_path / "out")])
    finally:
        logger.removeHandler(keep)
    assert result.exit_code == 2
    assert any(r.name == "cmri_release.audit" and "[read train" in r.getMessage() for r in records)
