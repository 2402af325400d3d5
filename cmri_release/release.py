"""The release gate: data -> generator -> synthesis -> audit -> gate -> export, as one call.

`run_release(spec)` never raises for a problem in a stage: it returns a `ReleaseOutcome` whose
`exit_code` is 0 (released), 1 (blocked by the gate: nothing exported) or 2 (error: nothing
exported). The synthetic cohort is written to the release's staging folder first, read back
through the same reader and preprocessing a user would apply, and those slices are audited: the
gate vouches for the bytes it lets out. The audit folder is written whenever the audit ran,
whatever the verdict; the staging folder becomes the release only on a pass, atomically (see
`export.py`), with the record `cmri-release verify` re-runs the audit from. Every stage is timed.
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

from .audit import MIN_HOLDOUT_PATIENTS, _generator_factory, check_options
from .core.cohort import Cohort
from .core.errors import CmriError, describe_unexpected
from .core.fs import partial_prefix, sweep_partials, written_aside
from .export import staged_release
from .preprocess import PreprocessConfig, cohort_to_slices, slices_to_cohort
from .spec import ReleaseSpec
from .core.splits import split_subjects
from .verify import audit_record, model_fingerprint, torch_threads

AUDIT_FILES = {"audit.json", "audit.html", "junit.xml"}
RELEASED, BLOCKED, ERROR = "released", "blocked", "error"
EXIT_CODES = {RELEASED: 0, BLOCKED: 1, ERROR: 2}


@dataclass
class ReleaseOutcome:
    status: str  # released | blocked | error
    checks: list[dict] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    release_dir: Path | None = None
    audit_dir: Path | None = None
    message: str = ""  # the error, or why the gate blocked (one reason per line)
    failed_stage: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def failed_checks(self) -> list[dict]:
        return [c for c in self.checks if not c.get("passed")]

    @property
    def wall_seconds(self) -> float:
        return float(sum(self.stage_seconds.values()))


class _Stages:
    """Times named stages and remembers which one was running when something failed."""

    def __init__(self, on_stage=None):
        self.seconds: dict[str, float] = {}
        self.current: str | None = None
        self.on_stage = on_stage

    @contextlib.contextmanager
    def __call__(self, name: str):
        self.current = name
        if self.on_stage is not None:
            self.on_stage(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 2)
        self.current = None


@dataclass
class _Data:
    train: object  # SliceSet
    holdout: object
    test: object | None
    counts: dict[str, int]
    description: str


def _preflight(spec: ReleaseSpec) -> None:
    """Refuse before an hour of work what would be refused at the end; clear what a killed run left."""
    device = spec.generator.device
    if device.startswith("cuda"):  # before the phantom or the cohort is read, not after
        import torch

        if not torch.cuda.is_available():
            raise CmriError(f"{spec.source}: [generator] device: {device!r}, but no CUDA device is available here")
    out = spec.export.out
    sweep_partials(out)
    sweep_partials(spec.export.audit_path)
    if out.exists() or out.is_symlink():
        raise CmriError(f"{out}: already exists; a release is never overwritten (choose a new [export] out)")
    audit = spec.export.audit_path
    if audit.exists():
        if not audit.is_dir():
            raise CmriError(f"{audit}: exists and is not a folder (the audit folder)")
        strangers = [p.name for p in audit.iterdir() if p.name not in AUDIT_FILES | {"model"}]
        if strangers:
            raise CmriError(f"{audit}: holds files the audit did not write ({', '.join(sorted(strangers)[:3])}); "
                            f"choose another audit folder")


def _split(cohort: Cohort, spec: ReleaseSpec, where: str) -> dict[str, Cohort]:
    try:
        ids = split_subjects({s.id: s.vendor for s in cohort}, spec.data.split.fractions(), seed=spec.seed)
    except CmriError as exc:  # name what is too small: the cohort folder, or the spec's phantom
        raise CmriError(f"{where}: {exc}") from None
    return {name: cohort.subset(members) for name, members in ids.items()}


def load_data(spec: ReleaseSpec, config: PreprocessConfig, quiet: bool) -> _Data:
    """The real splits the spec names (a phantom, one cohort split here by patient, or three folders), preprocessed;
    used by the release and by `verify`, which must rebuild exactly the cohorts the audit saw."""
    from .io import read_cohort

    d = spec.data
    if d.source == "phantom":
        from .phantom import default_workers, make_phantom

        try:
            cohort = make_phantom(d.phantom.subjects, d.phantom.seed, vendors=d.phantom.vendors, quiet=quiet,
                                  workers=default_workers())
        except ValueError as exc:
            raise CmriError(f"{spec.source}: [data.phantom]: {exc}") from None
        parts = _split(cohort, spec, f"{spec.source}: [data.phantom] subjects")
        description = f"a procedural phantom cohort of {len(cohort)} patients (seed {d.phantom.seed})"
    elif d.source == "cohort":
        cohort = read_cohort(d.cohort)
        parts = _split(cohort, spec, str(d.cohort))
        description = f"a cohort of {len(cohort)} real patients"
    else:
        parts = {name: read_cohort(getattr(d, name)) for name in ("train", "holdout", "test")
                 if getattr(d, name) is not None}
        seen: dict[str, str] = {}
        for name, part in parts.items():
            for sid in part.ids:
                if sid.lower() in seen:
                    raise CmriError(f"{getattr(d, name)}: subject {sid!r} is also in the {seen[sid.lower()]} cohort; "
                                    f"a patient must be in one split only")
                seen[sid.lower()] = name
        description = f"a cohort of {sum(len(p) for p in parts.values())} real patients"
    if len(parts["holdout"]) < MIN_HOLDOUT_PATIENTS:  # refused here, not by the audit after the training
        where = d.holdout if d.source == "paths" else d.cohort if d.source == "cohort" else \
            f"{spec.source}: [data.phantom] subjects"
        raise CmriError(f"{where}: {len(parts['holdout'])} holdout patient(s); the audit needs at least "
                        f"{MIN_HOLDOUT_PATIENTS}")
    slices = {name: cohort_to_slices(part, config) for name, part in parts.items()}
    for name in ("train", "holdout"):
        if not slices[name].has_label.any():
            raise CmriError(f"the {name} split has no annotated slice; the generator and the audit need label maps")
    return _Data(train=slices["train"], holdout=slices["holdout"], test=slices.get("test"),
                 counts={name: len(part) for name, part in parts.items()}, description=description)


def _preprocess_config(spec: ReleaseSpec, generator) -> PreprocessConfig:
    if generator is None:
        return PreprocessConfig(size=spec.data.size)
    saved = dict(generator.preprocess or {})
    if saved.get("size") != spec.data.size:
        raise CmriError(f"{spec.source}: [data] size: {spec.data.size} px, but the model in {spec.generator.model} "
                        f"was trained at {saved.get('size')} px; set size = {saved.get('size')}")
    return PreprocessConfig.from_dict(saved)


def _privacy(spec: ReleaseSpec):
    if not spec.privacy.dp:
        return None
    from generators.base import DPConfig

    p = spec.privacy
    return DPConfig(epsilon=p.epsilon, delta=p.delta, max_grad_norm=p.max_grad_norm, accountant=p.accountant)


def _train(spec: ReleaseSpec, data: _Data, config: PreprocessConfig, quiet: bool):
    """The generator, trained; and the audit's cache: the LiRA reference generators when they were trained beside it
    (`_references_ahead`), else empty."""
    from generators import create_generator

    from .core.parallel import map_jobs

    g = spec.generator
    gen = create_generator(g.name, network="large" if g.device.startswith("cuda") else "compact")
    gen.preprocess = config.to_dict()
    minutes = g.minutes
    if g.epochs is None and minutes is None:  # the spec's "generator's own default": the train command's budget
        from generators.base import DEFAULT_MINUTES
        minutes = DEFAULT_MINUTES

    def fit_target():
        gen.fit(data.train, _privacy(spec), epochs=g.epochs, minutes=minutes if g.epochs is None else None,
                device=g.device, seed=spec.seed, quiet=quiet)
        return gen

    ahead = _references_ahead(spec, gen, data)
    try:
        if ahead is None:
            return fit_target(), {}
        key, fit_references = ahead
        # Two jobs, one CPU core each: the generator (a second thread buys its training little) and, one after the
        # other, the references the calibrated attack would train after it (the same seeds and patients, so the
        # same weights: auditors.privacy.lira.references_key).
        _, references = map_jobs(lambda job: job(), [fit_target, fit_references], workers=2)
        return gen, {key: references}
    except ValueError as exc:
        raise CmriError(f"training {g.name}: {exc}") from None


def _references_ahead(spec: ReleaseSpec, gen, data: _Data):
    """(cache key, a job training the LiRA references) when the audit will train them and they can be trained
    beside the generator: the privacy group with the calibrated white-box attack, an epoch budget (a time budget's
    epochs are known only after training), on the CPU with at least two threads, and no DP (DP-SGD draws its noise
    from torch's global generator, which a model trained beside would reseed). None otherwise: the attack trains
    its references itself, as before."""
    import torch

    from auditors.base import option_value
    from auditors.privacy.lira import fit_reference, reference_jobs, references_key
    from auditors.privacy.mia import patient_halves

    g = spec.generator
    options = check_options(spec.audit.audit_options())

    def option(name):
        return option_value(options, name)

    if ("privacy" not in spec.audit.groups or not option("white_box") or option("mia_reference_models") <= 0
            or g.epochs is None or spec.privacy.dp or not g.device.startswith("cpu") or torch.get_num_threads() < 2):
        return None
    epochs = option("mia_reference_epochs") if option("mia_reference_epochs") > 0 else g.epochs
    recipe = (gen.name, dict(gen.config), max(1, int(round(epochs))))
    _, nonmember_half = patient_halves(spec.seed, len(data.train.subjects), len(data.holdout.subjects))
    jobs = reference_jobs(data.holdout, nonmember_half, spec.seed, option("mia_reference_models"))
    if not all(d.has_label.any() for d, _ in jobs):
        return None  # a half without label maps: the attack reports that itself, as before
    fit = functools.partial(fit_reference, factory=_generator_factory, name=recipe[0], settings=recipe[1],
                            epochs=recipe[2], device=g.device, quiet=True)
    return references_key(recipe, jobs), lambda: [fit(job) for job in jobs]


def _synthesise(spec: ReleaseSpec, gen, data: _Data, quiet: bool):
    from generators.synthesis import synthesize

    s = spec.synthesis
    masks = data.holdout if s.masks == "holdout" else None
    return synthesize(gen, s.subjects, vendors=list(s.vendors) if s.vendors else None, seed=spec.seed,
                      masks_from=masks, quiet=quiet)


def _write_audit_folder(report, gen, trained: bool, target: Path) -> None:
    from .audit import write_audit

    with written_aside(target, replace=True) as tmp:  # replaces an earlier audit (`_preflight`: only ours)
        write_audit(report, tmp)
        if trained:  # the trained model stays internal, beside the audit: reload it with [generator] model
            gen.save(tmp / "model")


def _gate(report, spec: ReleaseSpec) -> tuple[bool, str]:
    """The verdict, failing closed: an error, a missing group, or any check that failed or was inconclusive blocks."""
    from .reporting.text import blocking_reasons

    checks = [c.to_dict() if hasattr(c, "to_dict") else dict(c) for c in report.checks]
    problems = []
    errors = getattr(report, "errors", None) or {}
    if errors:
        problems.append(f"auditor error(s): {', '.join(sorted(errors))}")
    groups = {c["name"].split(".", 1)[0] for c in checks}
    missing = [g for g in spec.audit.groups if g not in groups]
    if missing:
        problems.append(f"no check from group(s) {', '.join(missing)}")
    problems += blocking_reasons(checks)
    if getattr(report, "verdict", "fail") != "pass" and not problems:
        problems.append(f"audit verdict {report.verdict!r}")
    return not problems, "\n".join(problems)  # one reason per line: a reason may itself hold "; "


def run_release(spec: ReleaseSpec, quiet: bool = True, on_stage=None) -> ReleaseOutcome:
    """Run the whole gate; see the module docstring for what is written when.

    `quiet` silences progress bars; `on_stage(name)` (optional) is told when each stage starts.
    """
    stages = _Stages(on_stage)
    outcome = ReleaseOutcome(status=ERROR, stage_seconds=stages.seconds)
    try:
        _preflight(spec)
        gen, trained = None, False
        if spec.generator.model is not None:
            with stages("load model"):
                from generators import load_generator

                gen = load_generator(spec.generator.model, device=spec.generator.device)
        config = _preprocess_config(spec, gen)
        with stages("data"):
            data = load_data(spec, config, quiet)
        cache = {}
        if gen is None:
            with stages("train"):
                gen, cache = _train(spec, data, config, quiet)
                trained = True
        with stages("synthesise"):
            synthetic = _synthesise(spec, gen, data, quiet)
        # What is audited is what is released: the data are staged as files, read back through the user's
        # reader and preprocessing, and those slices are audited (the export maps intensities per vendor and
        # stacks volumes; read back, they are re-cropped and renormalised: not the generator's slices).
        with staged_release(spec.export.out) as staging:
            with stages("stage data"):
                staging.write_data(slices_to_cohort(synthetic))
                released = staging.read_data()
                audited = cohort_to_slices(released, config)
            with stages("audit"):
                from auditors.executors import open_executor

                from .audit import run_audit

                with open_executor(spec.compute.executor, spec.compute.ray_address) as executor:
                    report = run_audit(data.train, data.holdout, audited, test=data.test, generator=gen,
                                       model_card=gen.model_card, groups=list(spec.audit.groups),
                                       thresholds=dict(spec.thresholds), seed=spec.seed,
                                       options=spec.audit.audit_options(), quiet=quiet,
                                       device=spec.generator.device, executor=executor, cache=cache)
            with stages("audit report"):
                _write_audit_folder(report, gen, trained, spec.export.audit_path)
                outcome.audit_dir = spec.export.audit_path
            outcome.checks = [c.to_dict() for c in report.checks]
            passed, why = _gate(report, spec)
            if not passed:
                outcome.status, outcome.message = BLOCKED, why
                return outcome  # leaving the `with` removes the staged data: nothing is exported
            with stages("export"):
                model_dir = spec.generator.model or spec.export.audit_path / "model"
                record = audit_record(report, config.to_dict(), {"train": data.train, "holdout": data.holdout,
                                                                 "test": data.test, "synthetic": audited},
                                      model=model_fingerprint(model_dir), device=spec.generator.device,
                                      threads=torch_threads())
                card = gen.model_card
                collection = {
                    "generator": card.get("generator"), "source_description": data.description,
                    "loaded": not trained, "spacing_mm": data.train.spacing_mm,
                    "rows": [("Data source", data.description),
                             ("Patients per split", ", ".join(f"{k} {v}" for k, v in data.counts.items())),
                             ("Generator", card.get("generator")),
                             ("Training (s / epochs / steps)", _training_summary(card)),
                             ("Masks for synthesis", spec.synthesis.masks), ("Seed", spec.seed)],
                }
                outcome.release_dir = staging.publish(
                    released, spec=spec.to_dict(), verdict="pass", checks=outcome.checks, ledger=card.get("privacy"),
                    model_card=card, formats=spec.export.formats, seeds=_seeds(spec),
                    figures=[f for r in report.results for f in r.figures], collection=collection,
                    stage_seconds=dict(stages.seconds), audit=record,
                    clinical=next((r.metrics for r in report.results if r.auditor == "clinical_indices"), None))
        outcome.status = RELEASED
        return outcome
    except CmriError as exc:
        outcome.message, outcome.failed_stage = str(exc), stages.current
    except Exception as exc:  # noqa: BLE001 - any failure of any stage is an error, and nothing is exported
        outcome.message = describe_unexpected(exc)
        outcome.failed_stage = stages.current
    outcome.status = ERROR
    return outcome


def _training_summary(card: dict) -> str:
    t = card.get("training") or {}
    if not t:
        return "—"
    return f"{t.get('seconds', 0):.0f} s / {t.get('epochs', 0):.3g} / {t.get('steps', '—')}"


def _seeds(spec: ReleaseSpec) -> dict:
    seeds = {"run": spec.seed, "split": spec.seed, "training": spec.seed, "synthesis": spec.seed,
             "audit": spec.seed}
    if spec.data.phantom is not None:
        seeds["phantom"] = spec.data.phantom.seed
    return seeds
