"""`cmri-release train DATA --generator NAME --out MODEL`: fit a generator on a cohort's annotated slices."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import CmriError

DEFAULT_MINUTES = 3.0  # the default CPU budget when neither --epochs nor --minutes is given


def _generator_names() -> list[str]:
    from generators import GENERATORS
    return sorted(GENERATORS)


@click.command("train")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--generator", "generator_name", type=click.Choice(_generator_names()), default="flow",
              show_default=True, help="Which generator to train.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Model folder to write (new).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Passes over the data.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help=f"Wall-clock budget (default {DEFAULT_MINUTES:g} when --epochs is not given).")
@click.option("--size", type=click.IntRange(min=16, max=512), default=64, show_default=True,
              help="Slice size in pixels after preprocessing (a multiple of 16).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--network", type=click.Choice(["tiny", "compact", "large"]), default=None,
              help="Network size (default: compact on cpu, large on cuda; tiny is for tests).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
# DP goes here: --dp, --epsilon E, --delta D, --max-grad-norm C build a generators.DPConfig passed as `privacy`.
def train_command(data, generator_name, out, epochs, minutes, size, device, network, seed, quiet):
    """Train a generator on the annotated slices of DATA and save it to a model folder."""
    import torch

    from generators import create_generator
    from generators.checkpoint import check_output

    from ..io import read_cohort
    from ..preprocess import PreprocessConfig, cohort_to_slices

    if epochs is not None and minutes is not None:
        raise click.UsageError("give --epochs or --minutes, not both")
    if epochs is None and minutes is None:
        minutes = DEFAULT_MINUTES
    if size % 16:
        raise click.UsageError(f"--size must be a multiple of 16, got {size}")
    if device == "cuda" and not torch.cuda.is_available():
        raise CmriError("--device cuda: no CUDA device is available here")
    check_output(out)  # fail before training, not after, when OUT is taken
    privacy = None
    config = PreprocessConfig(size=size)
    slices = cohort_to_slices(read_cohort(data), config)
    if not slices.has_label.any():
        raise CmriError(f"{data}: no annotated slices to train on")
    gen = create_generator(generator_name, network=network or ("large" if device == "cuda" else "compact"))
    gen.preprocess = config.to_dict()
    try:
        log = gen.fit(slices, privacy, epochs=epochs, minutes=minutes, device=device, seed=seed, quiet=quiet)
    except ValueError as exc:
        raise CmriError(f"{data}: {exc}") from None
    gen.save(out)
    card = gen.model_card
    loss = ", ".join(f"{k} {v:.4f}" for k, v in log["final_loss"].items())
    click.echo(f"trained {generator_name} on {card['training_data']['n_subjects']} subjects "
               f"({card['training_data']['n_slices']} slices, {size} px) in {log['seconds']:.0f} s: "
               f"{log['epochs']:.1f} epochs, {log['steps']} steps, loss {loss} -> {out}")
    if card["mask_generator"]["kind"] is None:
        click.echo(f"warning: no mask generator ({card['mask_generator']['reason']}); synthesize will need --masks",
                   err=True)
