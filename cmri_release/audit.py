"""The audit: run the auditors of the chosen groups over one context and collect an `AuditReport`.

Used by the `audit` command and by the release gate. `run_audit` validates its inputs (one image
size, no patient in both train and holdout, thresholds that name real checks) before anything runs,
then runs every auditor fail-closed (an auditor that raises is a failed check) and times it.
`write_audit` writes `audit.json`, `junit.xml` and `audit.html` into a folder.
"""
from __future__ import annotations

import difflib
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .core.errors import InputError, SpecError
from .core.sliceset import SliceSet

# The fewest holdout patients the privacy statistics run on at all: membership inference scores the attack chosen
# on one half of the patients on the other, so each half needs a non-member (auditors.privacy.mia_stats.halves), and
# the near-copy baselines leave one holdout patient out. Smaller cohorts that can run give `inconclusive` checks
# that say what size would decide; `holdout_needed_for_decision` names that size in the refusal.
MIN_HOLDOUT_PATIENTS = 2


@dataclass
class AuditReport:
    results: list  # auditors.base.AuditResult, one per auditor run
    verdict: str  # "pass" | "fail" | "inconclusive"
    groups: list[str]
    thresholds: dict[str, float]  # the overrides this audit ran with
    timings: dict[str, float]  # seconds per auditor and "total"
    feature_spaces: dict[str, dict] = field(default_factory=dict)
    inputs: dict[str, dict] = field(default_factory=dict)
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    group_verdicts: dict[str, str] = field(default_factory=dict)

    @property
    def checks(self) -> list:
        return [c for r in self.results for c in r.checks]

    @property
    def errors(self) -> dict[str, str]:
        return {r.auditor: r.error for r in self.results if r.error}

    @property
    def figures(self) -> list:
        return [f for r in self.results for f in r.figures]


def nearest(name: str, known) -> str | None:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return match[0] if match else None


def check_thresholds(thresholds: Mapping[str, Any] | None, known: Mapping[str, tuple], source: str = "thresholds"
                     ) -> dict[str, float]:
    """Thresholds keyed by check name; an unknown name or a non-number is a SpecError naming the key."""
    out = {}
    for name, value in (thresholds or {}).items():
        if name not in known:
            hint = nearest(name, known)
            raise SpecError(f"{source}: unknown check {name!r}" + (f"; did you mean {hint!r}?" if hint else
                                                                  f"; known: {', '.join(sorted(known))}"))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{source}: {name}: the threshold must be a number, got {value!r}")
        out[name] = float(value)
    return out


def _flatten(table: Mapping, prefix: str = "") -> dict[str, Any]:
    """TOML reads `privacy.mia_auc = 0.6` as a nested table; checks are named with the dots."""
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_thresholds(path, known: Mapping[str, tuple]) -> dict[str, float]:
    """Read a TOML thresholds file keyed by check name (optionally under a `[thresholds]` table)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "thresholds file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the thresholds file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    if set(doc) == {"thresholds"} and isinstance(doc["thresholds"], Mapping):
        doc = doc["thresholds"]
    return check_thresholds(_flatten(doc), known, str(path))


def check_options(options: Mapping[str, Any] | None, source: str = "options") -> dict[str, Any]:
    """Audit options checked against the auditors' declarations; an unknown or mistyped one is a SpecError."""
    import auditors  # noqa: F401 - importing registers every auditor and its options
    from auditors.base import validate_options

    try:
        return validate_options(dict(options or {}))
    except ValueError as exc:
        raise SpecError(f"{source}: {exc}") from None


def available_groups() -> list[str]:
    """Groups that have at least one registered auditor, in the canonical order."""
    import auditors  # noqa: F401 - importing registers every auditor
    from auditors.base import AUDITORS, GROUPS

    present = {cls.group for cls in AUDITORS.values()}
    return [g for g in GROUPS if g in present]


def known_checks() -> dict[str, tuple]:
    import auditors  # noqa: F401
    from auditors.base import default_thresholds

    return default_thresholds()


def _describe(slices: SliceSet) -> dict:
    return {"patients": len(slices.subjects), "slices": len(slices), "size": slices.size,
            "spacing_mm": slices.spacing_mm, "vendors": slices.vendor_names}


def check_inputs(train: SliceSet, holdout: SliceSet, synthetic: SliceSet, test: SliceSet | None = None) -> None:
    """Refuse inputs no audit can be trusted on, before any auditor runs."""
    named = {"train": train, "holdout": holdout, "synthetic": synthetic, "test": test}
    for name, s in named.items():
        if s is not None and len(s) == 0:
            raise InputError(name, "holds no slices")
    sizes = {name: s.size for name, s in named.items() if s is not None}
    if len(set(sizes.values())) != 1:
        raise InputError("synthetic" if sizes["synthetic"] != sizes["train"] else "holdout",
                         f"slices of different sizes ({', '.join(f'{k} {v} px' for k, v in sizes.items())}); "
                         "preprocess every cohort with the same size")
    for name in ("holdout", "test"):
        if named[name] is None:
            continue
        shared = sorted(set(train.subjects) & set(named[name].subjects))
        if shared:
            raise InputError(name, f"{len(shared)} patient(s) also in train (e.g. {shared[0]!r}); splits must be "
                                   "by patient, or membership inference compares a patient with itself")
    if len(holdout.subjects) < MIN_HOLDOUT_PATIENTS:
        raise InputError("holdout", f"{len(holdout.subjects)} patient(s); the audit needs at least "
                                    f"{MIN_HOLDOUT_PATIENTS} to run, and "
                                    f"{holdout_needed_for_decision(len(train.subjects))} to decide")


def holdout_needed_for_decision(n_train: int) -> str:
    """The holdout size at which an honest generator passes membership inference at the default thresholds with
    95% probability (cmri-release plan), in words."""
    from auditors.privacy.mia import MembershipInference
    from auditors.privacy.mia_plan import holdout_needed

    threshold = MembershipInference.default_thresholds["privacy.mia_auc"][0]
    needed = holdout_needed(n_train, threshold)
    if needed is None:
        return f"no holdout decides beside {n_train} training patients (more training patients are needed)"
    return f"about {needed} beside {n_train} training patients (see cmri-release plan)"


def _generator_factory(name: str, settings: dict):
    """A fresh generator from the registry (the application's to hand down: auditors never import generators)."""
    from generators.base import create_generator

    return create_generator(name, **settings)


def run_audit(train: SliceSet, holdout: SliceSet, synthetic: SliceSet, test: SliceSet | None = None,
              generator=None, model_card: dict | None = None, groups=None, thresholds: Mapping | None = None,
              seed: int = 0, options: Mapping | None = None, quiet: bool = False, device: str = "cpu",
              executor=None, cache: Mapping | None = None) -> AuditReport:
    """Audit `synthetic` against the real splits with the registered auditors of `groups` (default: all present).
    `cache`: objects built ahead under the keys the auditors ask for (e.g. LiRA references trained beside the
    generator); an auditor uses one only under its exact key."""
    from auditors.base import AuditContext
    from auditors.runner import group_verdicts, run_auditors, verdict

    present = available_groups()
    groups = list(present if groups is None else groups)
    missing = [g for g in groups if g not in present]
    if missing or not groups:
        raise SpecError(f"unknown or empty audit group(s) {missing or groups}; available: {', '.join(present)}")
    overrides = check_thresholds(thresholds, known_checks())
    options = check_options(options)
    check_inputs(train, holdout, synthetic, test)
    if model_card is None and generator is not None:
        model_card = generator.model_card
    ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, test=test, generator=generator,
                       model_card=model_card, seed=int(seed), device=device, thresholds=overrides,
                       options=options, quiet=quiet, executor=executor, cache=dict(cache or {}),
                       generator_factory=_generator_factory if generator is not None else None)
    start = time.perf_counter()
    results = run_auditors(ctx, groups)
    timings = {r.auditor: round(r.seconds, 3) for r in results}
    timings["total"] = round(time.perf_counter() - start, 3)
    spaces = {key: ctx.cache[key].describe() for key in ("pixels", "embedding")
              if key in ctx.cache and hasattr(ctx.cache[key], "describe")}
    inputs = {name: _describe(s) for name, s in (("train", train), ("holdout", holdout), ("synthetic", synthetic),
                                                 ("test", test)) if s is not None}
    return AuditReport(results=results, verdict=verdict(results), groups=groups, thresholds=overrides,
                       timings=timings, feature_spaces=spaces, inputs=inputs, seed=int(seed),
                       options=options, group_verdicts=group_verdicts(results))


def write_audit(report: AuditReport, out_dir) -> dict[str, Path]:
    """Write `audit.json`, `junit.xml` and `audit.html` into `out_dir` (created if needed)."""
    from .reporting.audit_json import write_audit_json
    from .reporting.html import write_audit_html
    from .reporting.junit import write_junit

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"json": write_audit_json(report, out / "audit.json"), "junit": write_junit(report, out / "junit.xml"),
            "html": write_audit_html(report, out / "audit.html")}
