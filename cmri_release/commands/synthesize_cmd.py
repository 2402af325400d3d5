"""`cmri-release synthesize MODEL --out OUT --subjects N`: write a synthetic cohort in the cohort layout."""
from __future__ import annotations

from pathlib import Path

import click

from ..core.fs import check_output, written_aside
from ..core.errors import CmriError


@click.command("synthesize")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Cohort folder to write (new).")
@click.option("--subjects", type=click.IntRange(min=1), required=True, help="How many synthetic subjects.")
@click.option("--masks", "masks", type=click.Path(path_type=Path), default=None,
              help="Condition on this cohort's label maps instead of the model's mask generator.")
@click.option("--vendors", default=None, help="Comma-separated vendors to spread the subjects over "
                                              "(default: the training mix, or the --masks subjects' vendors).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the generator samples.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def synthesize_command(model, out, subjects, masks, vendors, seed, device, quiet):
    """Synthesise SUBJECTS new patients with the generator in MODEL and write them to OUT."""
    from generators import load_generator
    from generators.synthesis import synthesize

    from ..exports import SYNTHETIC_MARK
    from .audit_cmd import check_device
    from ..io import read_cohort, write_cohort
    from ..preprocess import PreprocessConfig, cohort_to_slices, slices_to_cohort

    vendor_list = [v.strip() for v in vendors.split(",") if v.strip()] if vendors else None
    if vendors is not None and not vendor_list:
        raise click.UsageError("--vendors needs at least one vendor name")
    check_output(out, {"MODEL": model, "--masks": masks})  # fail before sampling when OUT is taken or an input
    check_device(device)
    gen = load_generator(model, device=device)
    masks_from = None
    if masks is not None:
        masks_from = cohort_to_slices(read_cohort(masks), PreprocessConfig.from_dict(gen.preprocess))
    slices = synthesize(gen, subjects, vendors=vendor_list, seed=seed, masks_from=masks_from, quiet=quiet)
    cohort = slices_to_cohort(slices, source="synthetic")
    with written_aside(out) as tmp:
        write_cohort(cohort, tmp, descrip=SYNTHETIC_MARK)
    click.echo(f"wrote {len(cohort)} synthetic subjects ({len(slices)} slices) to {out}")
