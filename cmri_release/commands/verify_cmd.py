"""`cmri-release verify RELEASE`: re-audit a release folder from its bytes and reproduce its recorded verdict.

A thin command over `cmri_release.verify`: every file against its sha256, then the recorded audit re-run on the
released data/ (read back as a user reads it) against the same real cohorts, given by the release's spec
(`--spec`) or as folders (`--train/--holdout/--test`, as in `audit`). Prints each recorded value beside the
re-measured one. Exit 0: every file verifies and every check is reproduced within its recorded tolerance, with
the same verdict. Exit 1: something differs. Exit 2: error (not a release folder, no model, unreadable input).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..core.errors import CmriError


def _default_model(release: Path, spec) -> Path | None:
    """The spec's loaded model, else the model the release trained, kept beside its audit (RELEASE.audit/model)."""
    candidates = []
    if spec is not None and spec.generator.model is not None:
        candidates.append(spec.generator.model)
    candidates.append(release.with_name(release.name + ".audit") / "model")
    if spec is not None:
        candidates.append(spec.export.audit_path / "model")
    return next((c for c in candidates if c.is_dir()), None)


def _real_from_spec(spec, quiet: bool):
    from ..preprocess import PreprocessConfig
    from ..release import load_data

    def load(preprocess: dict):
        data = load_data(spec, PreprocessConfig(**preprocess), quiet)
        return {"train": data.train, "holdout": data.holdout, "test": data.test}

    return load


def _real_from_folders(folders: dict[str, Path | None]):
    from ..io import read_cohort
    from ..preprocess import PreprocessConfig, cohort_to_slices

    def load(preprocess: dict):
        config = PreprocessConfig(**preprocess)
        return {name: cohort_to_slices(read_cohort(path), config) if path is not None else None
                for name, path in folders.items()}

    return load


def _run(release: Path, spec_file, train, holdout, test, model, quiet) -> int:
    from ..export import public_spec
    from ..verify import format_outcome, verify_release

    if (spec_file is None) == (train is None and holdout is None and test is None):
        raise click.UsageError("give the real cohorts the release was audited against: --spec SPEC, or --train and "
                               "--holdout (and --test if the audit had one)")
    spec, given = None, None
    if spec_file is not None:
        from ..spec import load_spec

        spec = load_spec(spec_file)
        given = public_spec(spec.to_dict())
        load_real = _real_from_spec(spec, quiet)
    else:
        if train is None or holdout is None:
            raise click.UsageError("--train and --holdout go together")
        load_real = _real_from_folders({"train": train, "holdout": holdout, "test": test})
    model = model or _default_model(release, spec)

    def announce(step: str) -> None:
        if not quiet:
            click.echo(f"[{step}]", err=True)

    outcome = verify_release(release, load_real, model_dir=model, given_spec=given, quiet=quiet, on_step=announce)
    click.echo(format_outcome(outcome))
    return outcome.exit_code


@click.command("verify")
@click.argument("release", type=click.Path(path_type=Path))
@click.option("--spec", "spec_file", type=click.Path(path_type=Path), default=None, metavar="SPEC.toml",
              help="The release's spec: names the real cohorts (or the phantom) the audit ran against.")
@click.option("--train", type=click.Path(path_type=Path), default=None, help="Real patients the generator saw.")
@click.option("--holdout", type=click.Path(path_type=Path), default=None, help="Real patients it never saw.")
@click.option("--test", type=click.Path(path_type=Path), default=None, help="Real patients of the utility test.")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="The model folder the release was audited with (default: the spec's [generator] model, else "
                   "RELEASE.audit/model).")
@click.option("--quiet", is_flag=True, help="No progress bars or step messages (for CI).")
def verify_command(release, spec_file, train, holdout, test, model, quiet):
    """Re-audit a release folder from its bytes and reproduce its recorded verdict.

    Checks every file against the manifest's sha256, re-runs the recorded audit (same groups, seed,
    thresholds, options and thread count) on the released data/ against the same real cohorts, and prints
    each recorded value beside the re-measured one. Exit 0: reproduced. Exit 1: a file, a value or a verdict
    differs. Exit 2: error.
    """
    try:
        code = _run(release, spec_file, train, holdout, test, model, quiet)
    except CmriError as exc:
        click.echo(f"error: {exc}", err=True)
        code = exc.exit_code
    sys.exit(code)
