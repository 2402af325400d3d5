"""`cmri-release phantom OUT --subjects N --seed S`: write a procedural phantom cohort.

The cohort is written beside OUT first and renamed into place, so OUT appears whole or not at all.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..core.fs import written_aside
from ..core.errors import InputError
from ..phantom import default_workers, make_phantom
from ..phantom.vendors import VENDOR_STYLES, resolve_vendor


def _vendor_list(ctx, param, value):
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise click.BadParameter("name at least one vendor")
    try:
        return [resolve_vendor(name).name for name in names]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("phantom")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--subjects", "n_subjects", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of patients.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Different seeds give different patients with different ids.")
@click.option("--vendors", callback=_vendor_list, default=None,
              help=f"Comma-separated vendor styles ({', '.join(VENDOR_STYLES)} or M&Ms letters A-D); "
                   "default Siemens,Philips,GE.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def phantom_command(out: Path, n_subjects: int, seed: int, vendors, quiet: bool):
    """Write a phantom short-axis cine cohort (ED/ES, ACDC labels) to OUT in the cohort layout."""
    from ..io import write_cohort  # the writer is only needed here; keep `cli` import light

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "exists and is not an empty folder; choose a new output folder")
    cohort = make_phantom(n_subjects, seed, vendors=vendors, quiet=quiet, workers=default_workers())
    with written_aside(out) as staging:
        write_cohort(cohort, staging)
    if not quiet:
        click.echo(f"wrote {len(cohort)} phantom subjects ({', '.join(cohort.vendors)}) to {out}")
