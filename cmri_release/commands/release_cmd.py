"""`cmri-release release SPEC.toml` and `cmri-release demo`: thin commands over `release.run_release`.

Both print one screen: the checks (value, threshold, result), the per-stage times, and the outcome.
Exit 0 released, 1 blocked by the gate, 2 error; nothing is exported unless the exit is 0.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..core.errors import CmriError

DEMO_OUT = Path("demo-out")


def format_outcome(outcome) -> str:
    """The one-screen summary: checks, stage times, verdict."""
    from ..release import BLOCKED, RELEASED
    from ..reporting.text import format_check_table

    lines = []
    if outcome.checks:
        lines += format_check_table(outcome.checks)
        lines.append("")
    if outcome.stage_seconds:
        lines.append(f"{'stage':<14} {'seconds':>8}")
        for name, seconds in outcome.stage_seconds.items():
            lines.append(f"{name:<14} {seconds:>8.1f}")
        lines.append(f"{'total':<14} {outcome.wall_seconds:>8.1f}")
        lines.append("")
    audit = f" (audit: {outcome.audit_dir})" if outcome.audit_dir else ""
    if outcome.status == RELEASED:
        lines.append(f"RELEASED: {outcome.release_dir}{audit}")
    elif outcome.status == BLOCKED:
        lines.append(f"BLOCKED: nothing exported{audit}")
        lines += [f"  - {reason}" for reason in outcome.message.splitlines()]
    else:
        stage = f" in stage '{outcome.failed_stage}'" if outcome.failed_stage else ""
        lines.append(f"ERROR{stage}: nothing exported{audit}")
    return "\n".join(lines)


def _run(spec, quiet: bool) -> None:
    from ..log import get_logger
    from ..release import ERROR, run_release

    def announce(stage: str) -> None:
        if not quiet:
            get_logger("release").info("[%s]", stage)

    outcome = run_release(spec, quiet=quiet, on_stage=announce)
    click.echo(format_outcome(outcome))
    if outcome.status == ERROR:
        click.echo(f"error: {outcome.message}", err=True)
    sys.exit(outcome.exit_code)


def _fail(exc: CmriError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


@click.command("release")
@click.argument("spec_file", metavar="SPEC.toml", type=click.Path(path_type=Path))
@click.option("--executor", "executor_name", type=click.Choice(["local", "ray"]), default=None,
              help="Where the audit's independent jobs run (overrides the spec's [compute] executor).")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="Join this Ray cluster (overrides [compute] ray_address; implies --executor ray).")
@click.option("--quiet", is_flag=True, help="No progress bars or stage messages (for CI).")
def release_command(spec_file: Path, executor_name: str | None, ray_address: str | None, quiet: bool):
    """Train or load, synthesise, audit, gate and export, as SPEC.toml says.

    Exit 0: released. Exit 1: blocked by the gate (nothing exported; the audit folder says why).
    Exit 2: error (nothing exported).
    """
    from ..spec import load_spec

    from dataclasses import replace

    try:
        spec = load_spec(spec_file)
    except CmriError as exc:
        _fail(exc)
    if executor_name == "local" and ray_address is not None:
        raise click.UsageError("--ray-address applies only with --executor ray")
    if executor_name is not None or ray_address is not None:  # the command line beats the spec
        name = "ray" if ray_address is not None else executor_name
        address = ray_address if name == "ray" and ray_address is not None else (
            spec.compute.ray_address if name == "ray" else None)
        spec = replace(spec, compute=replace(spec.compute, executor=name, ray_address=address))
    _run(spec, quiet)


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=DEMO_OUT, show_default=True,
              help="Release folder to create (the audit goes to OUT.audit).")
@click.option("--write-spec", "write_spec", type=click.Path(path_type=Path), default=None,
              help="Only write the default spec, with comments, to this file (a starting point) and exit.")
@click.option("--quiet", is_flag=True, help="No progress bars or stage messages (for CI).")
def demo_command(out: Path, write_spec: Path | None, quiet: bool):
    """The whole gate on a procedural phantom with the default spec (a few minutes on a laptop CPU)."""
    from ..spec import default_spec, default_spec_text, with_output

    try:
        if write_spec is not None:
            if write_spec.exists():
                raise CmriError(f"{write_spec}: already exists; not overwritten")
            write_spec.parent.mkdir(parents=True, exist_ok=True)
            write_spec.write_text(default_spec_text(), encoding="utf-8")
            click.echo(f"wrote the default spec to {write_spec}; run it with: cmri-release release {write_spec}")
            return
        spec = with_output(default_spec(Path.cwd()), out)
    except CmriError as exc:
        _fail(exc)
    _run(spec, quiet)
