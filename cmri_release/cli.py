"""The `cmri-release` command line: a thin click group over the commands in `cmri_release/commands/`.

Errors the user can act on (`CmriError`) print one line on stderr and exit 2, never a traceback;
anything unexpected also exits 2 (fail closed) with one line naming the exception.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from . import __version__
from .core.errors import CmriError, describe_unexpected, one_line
from .log import configure_cli_logging


# Explicit registry of commands, imported on first use: a command that fails to import breaks loudly
# instead of vanishing, and `--help`, `--version` and shell completion of command names import no command
# module (nor torch, numpy): they read the summary here, the first line of each command's docstring
# (tests/test_cli_startup.py keeps the two equal).
COMMANDS = {
    "phantom": ("cmri_release.commands.phantom_cmd:phantom_command",
                "Write a phantom short-axis cine cohort (ED/ES, ACDC labels) to OUT in the cohort layout."),
    "inspect": ("cmri_release.commands.inspect_cmd:inspect_command",
                "Summarise the cohort in DATA (cohort layout, ACDC, M&Ms, M&Ms-2 or DICOM) and list its problems."),
    "train": ("cmri_release.commands.train_cmd:train_command",
              "Train a generator on the annotated slices of DATA and save it to a model folder."),
    "synthesize": ("cmri_release.commands.synthesize_cmd:synthesize_command",
                   "Synthesise SUBJECTS new patients with the generator in MODEL and write them to OUT."),
    "audit": ("cmri_release.commands.audit_cmd:audit_command",
              "Audit a synthetic cohort: privacy (memorisation, membership inference), fidelity, utility."),
    "plan": ("cmri_release.commands.plan_cmd:plan_command",
             "Print, per check, the chance an honest generator passes and the smallest leak caught at these sizes."),
    "release": ("cmri_release.commands.release_cmd:release_command",
                "Train or load, synthesise, audit, gate and export, as SPEC.toml says."),
    "demo": ("cmri_release.commands.release_cmd:demo_command",
             "The whole gate on a procedural phantom with the default spec (a few minutes on a laptop CPU)."),
    "verify": ("cmri_release.commands.verify_cmd:verify_command",
               "Re-audit a release folder from its bytes and reproduce its recorded verdict."),
}


def idle_threads_sleep() -> None:
    """OpenMP threads that finish their share of an operator sleep at once instead of spinning (OMP_WAIT_POLICY=
    PASSIVE), unless the user chose a policy. The networks run thousands of small operators. Beside one other busy
    process on 2 cores, spinning threads steal the core the others wait for: the demo took 177-228 s with OpenMP's
    default, 382 s with a shorter spin (GOMP_SPINCOUNT=30000) and 156-159 s with PASSIVE. On an idle machine
    spinning is faster (87-93 s against 110 s): a dedicated machine can ask for it with GOMP_SPINCOUNT=300000.
    See benchmarks/README.md. OpenMP reads the policy once, when torch loads: set before that or not at all."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


class _Group(click.Group):
    def main(self, *args, **kwargs):
        idle_threads_sleep()
        configure_cli_logging()
        return super().main(*args, **kwargs)

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx, formatter):
        """The command list of `--help` from the registry's summaries: no command module is imported."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)) for name in
                self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def shell_complete(self, ctx, incomplete):
        """Complete command names from the registry (no import); options of a command complete once it is named."""
        from click.shell_completion import CompletionItem

        names = [CompletionItem(name, help=COMMANDS[name][1]) for name in self.list_commands(ctx)
                 if name.startswith(incomplete)]
        return names + click.Command.shell_complete(self, ctx, incomplete)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CmriError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(2)
        except Exception as exc:  # noqa: BLE001 - fail closed with one line, exit 2
            click.echo(f"error: {describe_unexpected(exc)}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cmri-release")
def main():
    """Decide whether a synthetic cardiac MRI cohort may leave the building."""
