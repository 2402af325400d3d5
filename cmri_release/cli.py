"""The `cmri-release` command line: a thin click group over the commands in `cmri_release/commands/`.

Errors the user can act on (`CmriError`) print one line on stderr and exit 2, never a traceback;
anything unexpected also exits 2 (fail closed) with one line naming the exception.
"""
from __future__ import annotations

import sys

import click

from . import __version__
from .errors import CmriError, describe_unexpected, one_line


class _Group(click.Group):
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


def _register():
    # Explicit registration: a command that fails to import breaks the CLI loudly instead of vanishing.
    from .commands import audit_cmd, inspect_cmd, phantom_cmd, release_cmd, synthesize_cmd, train_cmd

    main.add_command(phantom_cmd.phantom_command)
    main.add_command(inspect_cmd.inspect_command)
    main.add_command(train_cmd.train_command)
    main.add_command(synthesize_cmd.synthesize_command)
    main.add_command(audit_cmd.audit_command)
    main.add_command(release_cmd.release_command)
    main.add_command(release_cmd.demo_command)


_register()
