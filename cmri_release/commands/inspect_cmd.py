"""`cmri-release inspect DATA [--json]`: summary (or one JSON object) on stdout; exit 0 usable, 2 not.

When the cohort is not usable, every problem is also printed on stderr as `error: <file>: <problem>`,
one line each, so scripts and CI logs show what to fix without parsing the JSON.
"""
from __future__ import annotations

import json

import click

from ..inspect import format_inspect, inspect_cohort


@click.command("inspect")
@click.argument("data", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the text summary.")
@click.pass_context
def inspect_command(ctx: click.Context, data: str, as_json: bool) -> None:
    """Summarise the cohort in DATA (cohort layout, ACDC, M&Ms, M&Ms-2 or DICOM) and list its problems."""
    report = inspect_cohort(data, progress=not as_json)
    click.echo(json.dumps(report, indent=2) if as_json else format_inspect(report))
    if not report["usable"]:
        for problem in report["problems"]:
            click.echo(f"error: {problem}", err=True)
        ctx.exit(2)
