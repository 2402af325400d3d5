"""`cmri-release train DATA --generator NAME --out MODEL [--dp --epsilon E ...]`: fit a generator on a cohort's
annotated slices, optionally with patient-level differential privacy (generators/dp, docs/differential-privacy.md)."""
from __future__ import annotations

from pathlib import Path

import click

from generators.base import DEFAULT_MINUTES

from ..core.fs import check_output
from ..core.errors import CmriError


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
@click.option("--dp", is_flag=True, help="Patient-level differential privacy (DP-SGD with Opacus); needs --epsilon "
                                        "and --epochs.")
@click.option("--epsilon", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Target epsilon per patient (the larger of the PRV and RDP accountants' stays at or below it).")
@click.option("--delta", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True), default=None,
              help="Delta (default and maximum: 1 / (10 x training patients)).")
@click.option("--max-grad-norm", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Clipping bound of each patient's gradient.")
@click.option("--accountant", type=click.Choice(["prv", "rdp"]), default="prv", show_default=True,
              help="The accountant Opacus tracks; the ledger reports both.")
def train_command(data, generator_name, out, epochs, minutes, size, device, network, seed, quiet, dp, epsilon, delta,
                  max_grad_norm, accountant):
    """Train a generator on the annotated slices of DATA and save it to a model folder."""
    import torch

    from generators import distributed

    if epochs is not None and minutes is not None:
        raise click.UsageError("give --epochs or --minutes, not both")
    privacy = _privacy_settings(dp, epsilon, delta, max_grad_norm, accountant, epochs)
    if epochs is None and minutes is None:
        minutes = DEFAULT_MINUTES
    if size % 16:
        raise click.UsageError(f"--size must be a multiple of 16, got {size}")
    if device == "cuda" and not torch.cuda.is_available():
        raise CmriError("--device cuda: no CUDA device is available here")
    check_output(out, {"DATA": data})  # fail before training, not after, when OUT is taken or inside DATA
    ctx, device = distributed.setup(device)  # under torchrun: join the other ranks (gloo on cpu, NCCL on cuda)
    try:
        _train(data, generator_name, out, epochs, minutes, size, device, network, seed, quiet, privacy, epsilon,
               ctx)
    finally:
        distributed.teardown()


def _train(data, generator_name, out, epochs, minutes, size, device, network, seed, quiet, privacy, epsilon, ctx):
    from generators import create_generator

    from ..io import read_cohort
    from ..preprocess import PreprocessConfig, cohort_to_slices

    config = PreprocessConfig(size=size)
    slices = cohort_to_slices(read_cohort(data), config)
    if not slices.has_label.any():
        raise CmriError(f"{data}: no annotated slices to train on")
    on_cuda = device.startswith("cuda")
    gen = create_generator(generator_name, network=network or ("large" if on_cuda else "compact"))
    gen.preprocess = config.to_dict()
    try:
        log = gen.fit(slices, privacy, epochs=epochs, minutes=minutes, device=device, seed=seed, quiet=quiet)
    except ValueError as exc:
        raise CmriError(f"{data}: {exc}") from None
    if not ctx.is_main:  # rank 0 alone writes the model folder and reports
        return
    gen.save(out)
    card = gen.model_card
    loss = ", ".join(f"{k} {v:.4f}" for k, v in log["final_loss"].items())
    click.echo(f"trained {generator_name} on {card['training_data']['n_subjects']} subjects "
               f"({card['training_data']['n_slices']} slices, {size} px) in {log['seconds']:.0f} s: "
               f"{log['epochs']:.1f} epochs, {log['steps']} steps, loss {loss}"
               f"{'' if ctx.world_size == 1 else f', {ctx.world_size} processes ({ctx.backend})'} -> {out}")
    ledger = card.get("privacy", {})
    if ledger.get("dp"):
        click.echo(f"privacy: epsilon {ledger['epsilon']:.3g} per patient at delta {ledger['delta']:.3g} "
                   f"(PRV {_fmt(ledger['epsilon_prv'])}, RDP {_fmt(ledger['epsilon_rdp'])}; target {epsilon:g}), "
                   f"noise {ledger['noise_multiplier']:.3g}, sample rate {ledger['sample_rate']:.3g}, "
                   f"{ledger['steps']} steps")
    if card["mask_generator"]["kind"] is None:
        click.echo(f"warning: no mask generator ({card['mask_generator']['reason']}); synthesize will need --masks",
                   err=True)


def _fmt(value) -> str:
    return "failed" if value is None else f"{value:.3g}"


def _privacy_settings(dp: bool, epsilon, delta, max_grad_norm: float, accountant: str, epochs):
    """The DPConfig for --dp, after the checks the command line can make before reading any data."""
    from generators.base import DP_EPOCHS_REASON, DPConfig

    if not dp:
        given = [flag for flag, value in (("--epsilon", epsilon), ("--delta", delta)) if value is not None]
        if given:
            raise click.UsageError(f"{' and '.join(given)} only apply with --dp")
        return None
    if epsilon is None:
        raise click.UsageError("--dp needs --epsilon (the privacy budget per patient, e.g. --epsilon 3)")
    if epochs is None:
        raise click.UsageError(f"--dp needs --epochs: {DP_EPOCHS_REASON}")
    return DPConfig(epsilon=float(epsilon), delta=delta, max_grad_norm=float(max_grad_norm), accountant=accountant)
