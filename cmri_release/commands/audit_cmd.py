"""`cmri-release audit`: audit a synthetic cohort against the real train and holdout cohorts.

A thin command over `cmri_release.audit`: read and preprocess the cohorts (with the model's
preprocessing when `--model` is given), run the auditors, write `audit.json`, `audit.html` and
`junit.xml`, print the checks. Exit 0 when every check passes, 1 when one fails, 2 on an error
(bad input, bad thresholds file, or an auditor that could not finish).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..core.errors import CmriError, InputError
from ..log import get_logger

log = get_logger("audit")

DEFAULT_SIZE = 64


def format_checks(report) -> str:
    """One line per check (estimate, interval, what it needs, verdict), what blocks, then the verdict and time."""
    from ..reporting.text import blocking_reasons, format_check_table

    checks = [c.to_dict() for c in report.checks]
    lines = format_check_table(checks)
    lines += [f"  - {reason}" for reason in blocking_reasons(checks)]
    lines.append(f"verdict: {report.verdict.upper()} ({report.timings.get('total', 0.0):.1f} s)")
    return "\n".join(lines)


class DeclaredOptions(click.Option):
    """`--option`, whose help lists every option the auditors declare (read when help is shown, not at import)."""

    def get_help_record(self, ctx):
        import auditors  # noqa: F401 - registers every auditor's options
        from auditors.base import OPTIONS

        self.help = ("Auditor option KEY=VALUE (TOML scalar or list), repeatable; an unknown or mistyped one is an "
                     "error. Declared: " + "; ".join(OPTIONS[n].describe() for n in sorted(OPTIONS)))
        return super().get_help_record(ctx)


def parse_groups(ctx, param, value):
    """`--only privacy,fidelity` -> ["privacy", "fidelity"]; an unknown or absent group is a usage error."""
    if value is None:
        return None
    from ..audit import available_groups

    present = available_groups()
    groups = [g.strip() for g in value.split(",") if g.strip()]
    bad = [g for g in groups if g not in present]
    if bad or not groups:
        raise click.BadParameter(f"unknown group(s) {', '.join(bad) or repr(value)}; choose from "
                                 f"{', '.join(present)}", ctx=ctx, param=param)
    return list(dict.fromkeys(groups))


def parse_options(ctx, param, values):
    """`--option embedding_steps=100` (repeatable) -> {"embedding_steps": 100}; values are read as TOML scalars."""
    import tomllib

    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        try:
            out[key] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw.strip()
    return out


def _preprocess_config(size: int | None, generator):
    from ..preprocess import PreprocessConfig

    if generator is None:
        return PreprocessConfig(size=size or DEFAULT_SIZE)
    saved = dict(getattr(generator, "preprocess", None) or {})
    if size is not None and saved.get("size") not in (None, size):
        raise CmriError(f"--size {size}: the model was trained at {saved.get('size')} px; omit --size or pass "
                        f"--size {saved.get('size')}")
    return PreprocessConfig.from_dict(saved, size=size or DEFAULT_SIZE)


def check_device(device: str) -> str:
    """`--device cuda` where no CUDA device is: an error before any work (never a silent fall back to CPU)."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CmriError("--device cuda: no CUDA device is available here")
    return device


def load_model(model: Path, device: str):
    """A model folder of this project, or a white-box adapter's saved folder (generators/adapters)."""
    from generators.adapters import is_adapter_folder, load_adapter

    if is_adapter_folder(model):
        return load_adapter(model, device=device)
    from generators import load_generator

    return load_generator(model, device=device)


def _run(train, holdout, synthetic, test, model, only, thresholds, size, seed, options, quiet, out,
         executor_name="local", ray_address=None, device: str = "cpu") -> int:
    from auditors.executors import open_executor

    from ..audit import check_options, known_checks, load_thresholds, run_audit, write_audit
    from ..io import read_cohort
    from ..preprocess import cohort_to_slices

    _check_out(out, {"--train": train, "--holdout": holdout, "--synthetic": synthetic, "--test": test,
                     "--model": model})
    overrides = load_thresholds(thresholds, known_checks()) if thresholds is not None else {}
    options = check_options(options, "--option")  # before any cohort is read
    check_device(device)
    generator = load_model(model, device) if model is not None else None
    config = _preprocess_config(size, generator)
    slices = {}
    for name, path in (("train", train), ("holdout", holdout), ("synthetic", synthetic), ("test", test)):
        if path is not None:
            if not quiet:
                log.info("[read %s: %s]", name, path)
            slices[name] = cohort_to_slices(read_cohort(path), config)
    try:
        with open_executor(executor_name, ray_address) as executor:
            report = run_audit(slices["train"], slices["holdout"], slices["synthetic"], test=slices.get("test"),
                               generator=generator,
                               model_card=generator.model_card if generator is not None else None,
                               groups=only, thresholds=overrides, seed=seed, options=options, quiet=quiet,
                               executor=executor, device=device)
    except InputError as exc:  # run_audit names a split ("holdout"); the user knows it by its folder
        folder = {"train": train, "holdout": holdout, "synthetic": synthetic, "test": test}.get(exc.path)
        raise InputError(folder or exc.path, exc.problem) from None
    paths = write_audit(report, out)
    click.echo(format_checks(report))
    click.echo(f"report: {paths['html']}")
    if report.errors:
        for name, message in report.errors.items():
            # The first line says what failed (audit.json keeps it all); libraries append dumps to their messages.
            first = (message.strip().splitlines() or ["no message"])[0]
            click.echo(f"error: auditor {name} failed: {first[:300]}", err=True)
        return 2
    return 0 if report.verdict == "pass" else 1


def _check_out(out: Path, inputs: dict) -> None:
    """Before any work: OUT must be a folder (or new) and outside every input (reports never land in real data)."""
    from ..core.fs import check_outside_inputs

    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder; --out names the folder for the reports")
    check_outside_inputs(out, inputs)


@click.command("audit")
@click.option("--train", type=click.Path(path_type=Path), required=True, help="Real patients the generator saw.")
@click.option("--holdout", type=click.Path(path_type=Path), required=True,
              help="Real patients it never saw (the privacy baseline).")
@click.option("--synthetic", type=click.Path(path_type=Path), required=True, help="The synthetic cohort to audit.")
@click.option("--test", type=click.Path(path_type=Path), default=None,
              help="Real patients for the utility test (neither generator nor segmenter saw them).")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="The model folder (or a white-box adapter's saved folder, see docs/api.md): enables white-box "
                   "attacks and reuses its preprocessing.")
@click.option("--only", callback=parse_groups, default=None, metavar="GROUPS",
              help="Comma list of privacy, fidelity, utility (default: every group present).")
@click.option("--thresholds", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="TOML file of threshold overrides keyed by check name.")
@click.option("--size", type=click.IntRange(8, 1024), default=None,
              help=f"Slice size in pixels (default: the model's, else {DEFAULT_SIZE}).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--option", "options", multiple=True, callback=parse_options, metavar="KEY=VALUE", cls=DeclaredOptions,
              help="Auditor option KEY=VALUE, repeatable.")
@click.option("--executor", "executor_name", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Where independent jobs (utility segmenters) run: threads here, or Ray tasks "
                                      "(needs the 'distributed' extra).")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="Join this Ray cluster (ray://host:10001, or auto); default: a local instance, stopped after.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the audit's networks (embedding, segmenter, the model's white-box scores) run.")
@click.option("--quiet", is_flag=True, help="No progress bars (for CI).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the three report files.")
def audit_command(train, holdout, synthetic, test, model, only, thresholds, size, seed, options, executor_name,
                  ray_address, device, quiet, out):
    """Audit a synthetic cohort: privacy (memorisation, membership inference), fidelity, utility.

    Writes OUT/audit.json, OUT/audit.html (internal: may show real patients) and OUT/junit.xml.
    Exit 0: every check passes (each shown inside its threshold by its confidence bound). Exit 1: a check
    fails or is inconclusive (the cohort is too small to show it either way). Exit 2: error.
    """
    try:
        if ray_address is not None and executor_name != "ray":
            raise click.UsageError("--ray-address applies only with --executor ray")
        code = _run(train, holdout, synthetic, test, model, only, thresholds, size, seed, options, quiet, out,
                    executor_name, ray_address, device=device)
    except CmriError as exc:
        click.echo(f"error: {exc}", err=True)
        code = exc.exit_code
    sys.exit(code)
