"""Re-audit a release from its bytes: the record a release keeps of its audit, and `verify_release` that re-runs it.

A release's manifest holds an `audit` record (`audit_record`): what was audited (the staged `data/` read back
through `read_cohort` + `cohort_to_slices` with the recorded preprocessing), the groups, seed, thresholds and
options the audit ran with, the torch thread count and device, fingerprints of the real splits and of the model,
and a tolerance per check. `verify_release` checks every file against its sha256, reads the data back the same
way, re-runs that audit against the same real cohorts (pinned to the recorded thread count) and compares every
check's estimate, bounds and verdict with the recorded ones.

Tolerances: at a fixed thread count the audit is bit-for-bit deterministic (measured: re-runs give identical
figures), so a check's tolerance only has to cover what changes with the thread count or the CPU's kernels;
`audit_tolerances.json` holds those differences as measured by `scripts/measure_audit_tolerance.py` (1 against
2 threads, and AVX-512 against AVX2 kernels, fresh processes); a check is allowed `TOLERANCE_FACTOR` times its
largest measured difference, at least `TOLERANCE_FLOOR`. A check that was never measured gets the floor: it must
reproduce exactly. The verdict must always be reproduced exactly.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .core.errors import CmriError, InputError
from .core.sliceset import SliceSet

RECORD_VERSION = 1
TOLERANCE_FACTOR = 2.0  # two data seeds of one cohort size measured: twice the largest difference covers others
TOLERANCE_FLOOR = 1e-6  # JSON round-trips floats exactly: anything below this is arithmetic noise
SIDES = ("estimate", "lower", "upper")


def slices_fingerprint(slices: SliceSet | None) -> dict | None:
    """Patients, slices and one sha256 over the preprocessed pixels, labels and their order: proves that a
    re-audit saw the same cohort without naming a patient (the ids enter only through the hash)."""
    if slices is None:
        return None
    digest = hashlib.sha256()
    for array in (slices.images, slices.labels, slices.slice_index, slices.has_label):
        digest.update(np.ascontiguousarray(array).tobytes())
    for strings in (slices.subject_ids, slices.vendors, slices.phases):
        digest.update("\n".join(strings.tolist()).encode())
    return {"patients": len(slices.subjects), "slices": len(slices), "sha256": digest.hexdigest()}


@lru_cache(maxsize=1)
def measured_tolerances() -> dict:
    """The measurement `scripts/measure_audit_tolerance.py --table` wrote (empty when none was made)."""
    try:
        text = resources.files("cmri_release").joinpath("audit_tolerances.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"checks": {}, "measured": None}
    return json.loads(text)


def tolerance_for(name: str) -> dict:
    """{"abs": allowed |difference| of estimate and each bound, "basis": why}."""
    table = measured_tolerances()
    entry = table.get("checks", {}).get(name)
    if entry is None or entry.get("threads_1_vs_2") is None:
        return {"abs": TOLERANCE_FLOOR, "basis": "not measured: must reproduce exactly"}
    kernels = entry.get("other_kernels", 0.0)
    if kernels is None:  # one side could not be measured on the other kernels: nothing bounds the difference
        return {"abs": TOLERANCE_FLOOR, "basis": "not measured on other kernels: must reproduce exactly"}
    measured = max(float(entry["threads_1_vs_2"]), float(entry.get("rerun", 0.0) or 0.0), float(kernels))
    return {"abs": max(TOLERANCE_FACTOR * measured, TOLERANCE_FLOOR),
            "basis": f"{TOLERANCE_FACTOR:g} x {measured:.3g} measured between 1 and 2 threads "
                     f"and AVX-512 / AVX2 kernels "
                     f"({table.get('measured', {}).get('cohort', 'see audit_tolerances.json')})"}


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def model_fingerprint(folder: Path | None) -> dict | None:
    """The sha256 of each file of a model folder, as its card lists them (None: no model was used)."""
    if folder is None:
        return None
    from generators.checkpoint import read_card

    card = read_card(Path(folder))
    return {"generator": card.get("generator"), "checksums": dict(card.get("checksums") or {})}


def audit_record(report, preprocess: dict, inputs: dict[str, SliceSet | None], *, model: dict | None,
                 device: str, threads: int) -> dict:
    """What `verify` needs to re-run this audit, for the manifest: JSON only."""
    checks = [c.name for c in report.checks]
    return {
        "record_version": RECORD_VERSION,
        "audited": "data/",
        "reader": "cmri_release.io.read_cohort + cmri_release.preprocess.cohort_to_slices",
        "preprocess": dict(preprocess),
        "groups": list(report.groups),
        "seed": int(report.seed),
        "thresholds": dict(report.thresholds),
        "options": json.loads(json.dumps(report.options)),  # tuples as lists: validate_options reads both
        "verdict": str(report.verdict),
        "device": device,
        "threads": int(threads),
        "platform": {"machine": platform.machine(), "system": platform.system(), "processor": platform.processor()},
        "inputs": {name: slices_fingerprint(s) for name, s in inputs.items() if s is not None},
        "model": model,
        "tolerances": {name: tolerance_for(name) for name in checks},
    }


# ---------------------------------------------------------------------------------------------------------------
# Re-running


@dataclass
class Comparison:
    """One recorded check beside its re-measured twin."""

    name: str
    recorded: dict | None
    measured: dict | None
    tolerance: float
    problems: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        return not self.problems

    @property
    def largest_difference(self) -> float | None:
        diffs = [_difference(self.recorded.get(s), self.measured.get(s)) for s in SIDES] \
            if self.recorded and self.measured else [None]
        return None if any(d is None for d in diffs) else max(diffs)


def _difference(a, b) -> float | None:
    if a is None and b is None:
        return 0.0
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b):
        return None
    return abs(float(a) - float(b))


def compare_checks(recorded: list[dict], measured: list[dict], tolerances: dict[str, dict]) -> list[Comparison]:
    """Per check (any auditor's): verdict identical, estimate and both bounds within the check's tolerance.

    A check recorded but not re-measured, or re-measured but never recorded, is a difference: the re-audit
    must run exactly the recorded checks.
    """
    now = {c["name"]: c for c in measured}
    out = []
    for rec in recorded:
        name = rec["name"]
        tol = float((tolerances.get(name) or {}).get("abs", TOLERANCE_FLOOR))
        new = now.pop(name, None)
        comp = Comparison(name, rec, new, tol)
        if new is None:
            comp.problems.append("not re-measured (the re-audit produced no such check)")
        else:
            if new.get("verdict") != rec.get("verdict"):
                comp.problems.append(f"verdict {rec.get('verdict')} recorded, {new.get('verdict')} now")
            if new.get("threshold") != rec.get("threshold") or new.get("op") != rec.get("op"):
                comp.problems.append(f"threshold {rec.get('op')} {rec.get('threshold')} recorded, "
                                     f"{new.get('op')} {new.get('threshold')} now")
            for side in SIDES:
                d = _difference(rec.get(side), new.get(side))
                if d is None:
                    comp.problems.append(f"{side} {rec.get(side)} recorded, {new.get(side)} now")
                elif d > tol:
                    comp.problems.append(f"{side} differs by {d:.3g} (tolerance {tol:.3g})")
        out.append(comp)
    for name, new in now.items():
        out.append(Comparison(name, None, new, 0.0, ["re-measured but not recorded"]))
    return out


@dataclass
class VerifyOutcome:
    folder: Path
    file_problems: list[str] = field(default_factory=list)
    setting_problems: list[str] = field(default_factory=list)  # the re-audit did not run on the recorded inputs
    notes: list[str] = field(default_factory=list)  # differences that do not decide (package versions, ...)
    comparisons: list[Comparison] = field(default_factory=list)
    recorded_verdict: str | None = None
    verdict: str | None = None
    audit_seconds: float | None = None
    created: str = ""  # when and by which tool the release was made, for the header

    @property
    def reproduced(self) -> bool:
        return (not self.file_problems and not self.setting_problems and bool(self.comparisons)
                and all(c.reproduced for c in self.comparisons) and self.verdict == self.recorded_verdict)

    @property
    def exit_code(self) -> int:
        return 0 if self.reproduced else 1


def read_record(manifest: dict, where: Path) -> dict:
    record = manifest.get("audit")
    if not isinstance(record, dict) or not record:
        raise InputError(where, f"manifest version {manifest.get('manifest_version')} records no audit settings; "
                                "only releases made by cmri-release with `verify` support can be re-audited")
    missing = [k for k in ("preprocess", "groups", "seed", "thresholds", "options", "threads", "inputs",
                           "tolerances") if k not in record]
    if missing:
        raise InputError(where, f"the manifest's audit record lacks {', '.join(missing)}")
    return record


def read_released(folder: Path, preprocess: dict) -> SliceSet:
    """The released data/ as the audit saw it: the user's reader, the recorded preprocessing."""
    from .io import read_cohort
    from .preprocess import PreprocessConfig, cohort_to_slices

    return cohort_to_slices(read_cohort(Path(folder) / "data"), PreprocessConfig(**preprocess))


def _pinned_threads(n: int):
    import contextlib

    import torch

    @contextlib.contextmanager
    def pinned():
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, int(n)))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return pinned()


def _compare_inputs(record: dict, slices: dict[str, SliceSet | None]) -> list[str]:
    problems = []
    for name, recorded in record["inputs"].items():
        now = slices_fingerprint(slices.get(name))
        if now is None:
            problems.append(f"{name}: the recorded audit had a {name} cohort ({recorded.get('patients')} patients); "
                            f"none was given")
        elif now["sha256"] != recorded.get("sha256"):
            problems.append(f"{name}: not the cohort that was audited ({now['patients']} patients / {now['slices']} "
                            f"slices now, {recorded.get('patients')} / {recorded.get('slices')} recorded, and the "
                            f"pixels differ)")
    for name in slices:
        if slices[name] is not None and name not in record["inputs"]:
            problems.append(f"{name}: given, but the recorded audit had no {name} cohort")
    return problems


def verify_release(folder: Path, load_real: Callable[[dict], dict[str, SliceSet | None]],
                   model_dir: Path | None = None, given_spec: dict | None = None, quiet: bool = True,
                   on_step: Callable[[str], None] | None = None) -> VerifyOutcome:
    """Re-audit the release in `folder`; `load_real(preprocess)` returns the real splits {"train", "holdout",
    "test"} preprocessed with the recorded preprocessing. `given_spec` (the spec as the manifest records specs)
    must match the recorded one but for [export]. Raises CmriError for what makes a re-audit impossible
    (exit 2); everything else is a difference in the outcome (exit 1)."""
    import time

    from .audit import run_audit
    from .export import package_versions, read_manifest, verify_manifest

    folder = Path(folder)
    step = on_step or (lambda _: None)
    manifest = read_manifest(folder)
    record = read_record(manifest, folder / "manifest.json")
    tool = manifest.get("tool") or {}
    outcome = VerifyOutcome(folder=folder, recorded_verdict=manifest.get("verdict"),
                            created=f"{manifest.get('created_utc', '?')} by {tool.get('name', '?')} "
                                    f"{tool.get('version', '?')}")
    if given_spec is not None:
        outcome.setting_problems += [f"spec {d}" for d in spec_differences(manifest.get("spec") or {}, given_spec)]
    step("checksums")
    outcome.file_problems = verify_manifest(folder)
    if outcome.file_problems:  # the bytes are not the released ones: any re-audit would judge something else
        return outcome
    recorded_packages, now_packages = manifest.get("packages") or {}, package_versions()
    for name in sorted(set(recorded_packages) | set(now_packages)):
        if recorded_packages.get(name) != now_packages.get(name):
            outcome.notes.append(f"package {name}: {recorded_packages.get(name)} recorded, {now_packages.get(name)} "
                                 f"here (the tolerances cover thread counts, not other package versions)")
    generator = None
    if record.get("model") is not None:
        if model_dir is None:
            raise CmriError(f"{folder}: the recorded audit used the generator (white-box attacks); give its model "
                            f"folder with --model")
        step("model")
        from generators import load_generator

        now_model = model_fingerprint(model_dir)
        if now_model != record["model"]:
            outcome.setting_problems.append(f"model {model_dir}: its files' sha256 differ from the model that was "
                                            f"audited")
        generator = load_generator(model_dir)
    step("real cohorts")
    real = load_real(dict(record["preprocess"]))
    step("released data")
    synthetic = read_released(folder, record["preprocess"])
    outcome.setting_problems += _compare_inputs(record, {**real, "synthetic": synthetic})
    step("audit")
    device = record.get("device") or "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            outcome.notes.append(f"audited on {device}; re-audited on the CPU")
            device = "cpu"
    start = time.perf_counter()
    with _pinned_threads(record["threads"]):
        report = run_audit(real["train"], real["holdout"], synthetic, test=real.get("test"), generator=generator,
                           model_card=generator.model_card if generator is not None else None,
                           groups=list(record["groups"]), thresholds=dict(record["thresholds"]),
                           seed=int(record["seed"]), options=dict(record["options"]), quiet=quiet, device=device)
    outcome.audit_seconds = time.perf_counter() - start
    outcome.verdict = str(report.verdict)
    outcome.comparisons = compare_checks(list(manifest.get("checks") or []), [c.to_dict() for c in report.checks],
                                         dict(record["tolerances"]))
    return outcome


def format_outcome(outcome: VerifyOutcome) -> str:
    """Each recorded value beside the re-measured one, then what differs and the result."""
    def num(v):
        return "none" if v is None else f"{v:.4g}"

    def value(c):
        return "—" if c is None else f"{num(c.get('estimate'))} [{num(c.get('lower'))}, {num(c.get('upper'))}] " \
                                     f"{c.get('verdict')}"

    lines = [f"release {outcome.folder} (made {outcome.created}; verdict {outcome.recorded_verdict} recorded)"]
    for problem in outcome.file_problems:
        lines.append(f"checksum: {problem}")
    if outcome.comparisons:
        width = max(len(c.name) for c in outcome.comparisons)
        rec_w = max(len(value(c.recorded)) for c in outcome.comparisons)
        lines.append(f"{'check':<{width}}  {'recorded':<{rec_w}}  {'re-measured':<{rec_w}}  {'|diff|':>8}  "
                     f"{'tolerance':>9}  result")
        for c in outcome.comparisons:
            diff = c.largest_difference
            lines.append(f"{c.name:<{width}}  {value(c.recorded):<{rec_w}}  {value(c.measured):<{rec_w}}  "
                         f"{'—' if diff is None else f'{diff:.2g}':>8}  {c.tolerance:>9.2g}  "
                         f"{'reproduced' if c.reproduced else 'DIFFERS'}")
        for c in outcome.comparisons:
            lines += [f"  - {c.name}: {p}" for p in c.problems]
    lines += [f"setting: {p}" for p in outcome.setting_problems]
    lines += [f"note: {n}" for n in outcome.notes]
    if outcome.file_problems:
        lines.append(f"NOT VERIFIED: {len(outcome.file_problems)} file(s) differ from the manifest; not re-audited")
    elif outcome.reproduced:
        lines.append(f"VERIFIED: every file matches its sha256; all {len(outcome.comparisons)} checks reproduced "
                     f"(verdict {outcome.verdict}, re-audit {outcome.audit_seconds:.1f} s)")
    else:
        bad = sum(not c.reproduced for c in outcome.comparisons)
        lines.append(f"NOT REPRODUCED: {bad} of {len(outcome.comparisons)} checks differ; verdict "
                     f"{outcome.recorded_verdict} recorded, {outcome.verdict} re-audited")
    return "\n".join(lines)


def spec_differences(recorded: dict, given: dict, skip=("export",)) -> list[str]:
    """Dotted keys where the given spec (as the manifest records specs) differs from the recorded one."""
    out = []

    def walk(a: Any, b: Any, prefix: str):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if not prefix and key in skip:
                    continue
                walk(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        elif a != b:
            out.append(f"{prefix}: {a!r} recorded, {b!r} given")

    walk(recorded, given, "")
    return out
