"""The auditor interface: one AuditContext in, one AuditResult out; checks with three verdicts; typed options.

A check estimates one quantity with a confidence interval and compares the interval with a threshold.
The burden of proof is on the release: for `estimate <= threshold` the check passes only when its
UPPER bound is at or below the threshold (safety shown), fails when its LOWER bound is above it (a
problem shown), and is `inconclusive` otherwise (the cohort is too small to tell), mirrored for `>=`.
Inconclusive blocks a release like a failure. A check whose estimate or bounds are missing or not
finite fails: the gate fails closed.

Options an auditor reads are declared (`Option`: name, type, default, range, help) and registered
with it; the audit refuses an undeclared or mistyped option before anything runs.
"""
from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, ClassVar, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from cmri_release.core.sliceset import SliceSet

GROUPS = ("privacy", "fidelity", "utility")
OPS = ("<=", ">=")  # which side of the threshold is good; strictness makes no sense against a bound


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"

    def __str__(self) -> str:
        return self.value


def combine_verdicts(verdicts: Iterable[Verdict | str]) -> Verdict:
    """Fail if anything failed, else inconclusive if anything could not be shown, else pass; nothing is a fail."""
    found = [Verdict(v) for v in verdicts]
    if not found or Verdict.FAIL in found:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE if Verdict.INCONCLUSIVE in found else Verdict.PASS


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


@dataclass
class Check:
    """One gated quantity: a point estimate, its confidence interval, a threshold and the side that is good.

    `lower`/`upper` are the bounds of an interval at `confidence` (each one-sided at that level unless the
    auditor says otherwise in `details`). An exact quantity (an accountant's epsilon, a count) uses
    `Check.exact`, whose bounds are the value itself. `decide` says, for an inconclusive check, what cohort
    would decide it; `plan` holds the cohort-size planning figures (`honest_pass_probability`,
    `smallest_detectable`) the reports print beside the check.
    """
    name: str  # "<group>.<metric>"
    estimate: float | None
    threshold: float
    op: str  # "<=": the estimate should be at most the threshold; ">=": at least
    lower: float | None = None
    upper: float | None = None
    confidence: float | None = None
    description: str = ""  # what the check guards against, for reports
    details: str = ""  # how the value was obtained, for reports
    decide: str = ""  # for an inconclusive check: what would decide it
    plan: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict = field(default=Verdict.FAIL, init=False)
    reason: str = field(default="", init=False)  # one line: why this verdict

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown operator {self.op!r} in check {self.name}; use one of {OPS}")
        if "." not in self.name or self.name.split(".", 1)[0] not in GROUPS:
            raise ValueError(f"check name {self.name!r} must be '<group>.<metric>' with group in {GROUPS}")
        if not _finite(self.threshold):
            raise ValueError(f"check {self.name}: the threshold must be a finite number, got {self.threshold!r}")
        self.threshold = float(self.threshold)
        for key in ("estimate", "lower", "upper", "confidence"):
            value = getattr(self, key)
            setattr(self, key, float(value) if _finite(value) else None)
        self.verdict, self.reason = self._decide()

    def _decide(self) -> tuple[Verdict, str]:
        if self.estimate is None:
            return Verdict.FAIL, "no value: the check could not be measured"
        if self.lower is None or self.upper is None:
            return Verdict.FAIL, "no confidence interval: safety cannot be shown"
        if self.lower > self.upper:
            return Verdict.FAIL, f"invalid interval [{self.lower:.4g}, {self.upper:.4g}]"
        t = self.threshold
        safe, unsafe = (self.upper, self.lower) if self.op == "<=" else (self.lower, self.upper)
        good = safe <= t if self.op == "<=" else safe >= t
        bad = unsafe > t if self.op == "<=" else unsafe < t
        side = "upper" if self.op == "<=" else "lower"
        other = "lower" if self.op == "<=" else "upper"
        if good:
            return Verdict.PASS, f"{side} bound {safe:.4g} {self.op} {t:.4g}: shown inside the threshold"
        if bad:
            return Verdict.FAIL, f"{other} bound {unsafe:.4g} is outside {self.op} {t:.4g}: shown outside the threshold"
        why = f"interval [{self.lower:.4g}, {self.upper:.4g}] straddles {t:.4g}: the cohort cannot tell"
        return Verdict.INCONCLUSIVE, why + (f"; {self.decide}" if self.decide else "")

    @classmethod
    def exact(cls, name: str, value, threshold: float, op: str, **kwargs) -> "Check":
        """A check on a quantity known exactly (no sampling error): its bounds are the value itself."""
        v = float(value) if _finite(value) else None
        return cls(name=name, estimate=v, threshold=threshold, op=op, lower=v, upper=v, confidence=1.0, **kwargs)

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    @property
    def value(self) -> float | None:
        """The point estimate (the name the first contract used)."""
        return self.estimate

    @property
    def group(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def margin(self) -> float | None:
        """How far the safe-side bound is inside the threshold (negative: by how much it is not)."""
        bound = self.upper if self.op == "<=" else self.lower
        if bound is None:
            return None
        return self.threshold - bound if self.op == "<=" else bound - self.threshold

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict.value, "passed": self.passed, "estimate": self.estimate,
                "value": self.estimate, "lower": self.lower, "upper": self.upper, "confidence": self.confidence,
                "threshold": self.threshold, "op": self.op, "reason": self.reason, "decide": self.decide,
                "plan": dict(self.plan), "description": self.description, "details": self.details}


def worst_case(parts: Sequence[tuple[str, float | None, float | None, float | None]], op: str
               ) -> tuple[str, float | None, float | None, float | None]:
    """Intersection-union over attacks or feature spaces: (label, estimate, lower, upper).

    The combined interval takes the worst bound on each side (for `<=`, the largest upper and the largest
    lower bound), so a check passes only when every part's safe-side bound is inside the threshold: adding
    a part can never loosen the gate, and no Bonferroni split is needed on the pass side. A part with a
    missing bound makes the combined bound missing (the check then fails closed). `label` names the part with
    the worst safe-side bound (the one that decides a pass); `estimate` is the worst of the parts' estimates,
    which lies inside the combined interval (the named part's own could fall below its lower bound).
    """
    if not parts:
        raise ValueError("worst_case needs at least one part")
    sign = 1.0 if op == "<=" else -1.0

    def key(bound):
        return math.inf if bound is None else sign * bound

    worst = max(parts, key=lambda p: (key(p[3] if op == "<=" else p[2]), key(p[1])))
    lowers = [p[2] for p in parts]
    uppers = [p[3] for p in parts]
    worse = max if op == "<=" else min
    lower = None if any(b is None for b in lowers) else worse(lowers)
    upper = None if any(b is None for b in uppers) else worse(uppers)
    estimates = [p[1] for p in parts if p[1] is not None]
    return worst[0], worse(estimates) if estimates else None, lower, upper


@dataclass(frozen=True)
class Option:
    """One setting an auditor (or a feature space) reads: declared once, validated before the audit runs.

    `kind` is int, float, bool, str or "str-list" (a list of strings, e.g. feature spaces); `low`/`high`
    bound numbers (inclusive); `choices` restricts strings, list items and numbers.
    """
    name: str
    kind: Any
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None

    def coerce(self, value: Any) -> Any:
        """The value as this option's type, or ValueError saying what is wrong."""
        where = f"option {self.name}"
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where}: expected true or false, got {value!r}")
            return value
        if self.kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (self.kind is int and not float(value).is_integer()):
                raise ValueError(f"{where}: expected {'an integer' if self.kind is int else 'a number'}, got {value!r}")
            value = self.kind(value)
            if not math.isfinite(value) or (self.low is not None and value < self.low) or \
                    (self.high is not None and value > self.high):
                raise ValueError(f"{where}: {value!r} is outside [{self.low}, {self.high}]")
            if self.choices and value not in self.choices:
                raise ValueError(f"{where}: expected one of {', '.join(map(str, self.choices))}, got {value!r}")
            return value
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise ValueError(f"{where}: expected one of {', '.join(self.choices)}, got {value!r}" if self.choices
                                 else f"{where}: expected a string, got {value!r}")
            return value
        if self.kind == "str-list":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not items or not all(isinstance(v, str) for v in items):
                raise ValueError(f"{where}: expected a non-empty list of names, got {value!r}")
            bad = [v for v in items if self.choices and v not in self.choices]
            if bad:
                raise ValueError(f"{where}: unknown {', '.join(map(repr, bad))}; choose from {', '.join(self.choices)}")
            return tuple(dict.fromkeys(items))
        raise TypeError(f"{where}: unsupported kind {self.kind!r}")

    def describe(self) -> str:
        kind = {int: "int", float: "float", bool: "bool", str: "str"}.get(self.kind, str(self.kind))
        bounds = "" if self.low is None and self.high is None else f", {self.low}..{self.high}"
        choices = f", one of {'/'.join(map(str, self.choices))}" if self.choices else ""
        return f"{self.name} ({kind}{bounds}{choices}; default {self.default!r}): {self.help}"


OPTIONS: dict[str, Option] = {}



def option_value(options: dict[str, Any], name: str) -> Any:
    """A declared option's value among `options` (checked ones): the one given, else its default. An undeclared
    name is a bug."""
    if name not in OPTIONS:
        raise KeyError(f"option {name!r} is read but never declared (declare it in an auditor's `options`)")
    return OPTIONS[name].coerce(options[name]) if name in options else OPTIONS[name].default

def register_options(*options: Option) -> None:
    """Declare options; the same name declared twice must be declared identically (shared settings)."""
    for opt in options:
        known = OPTIONS.get(opt.name)
        if known is not None and known != opt:
            raise ValueError(f"option {opt.name!r} is declared twice, differently")
        OPTIONS[opt.name] = opt


def nearest_name(name: str, known: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return match[0] if match else None


def validate_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Every given option checked against its declaration; ValueError names an unknown one's nearest match."""
    out = {}
    for name, value in (options or {}).items():
        if name not in OPTIONS:
            hint = nearest_name(name, OPTIONS)
            raise ValueError(f"unknown audit option {name!r}" + (f"; did you mean {hint!r}?" if hint else
                                                                 f"; known: {', '.join(sorted(OPTIONS))}"))
        out[name] = OPTIONS[name].coerce(value)
    return out


def describe_options() -> str:
    return "\n".join(OPTIONS[name].describe() for name in sorted(OPTIONS))


@dataclass
class Figure:
    name: str
    title: str
    png: bytes  # PNG bytes (reports inline them as base64)
    public: bool  # False when the figure shows a real patient's image: never enters the datasheet
    caption: str = ""


@dataclass
class AuditResult:
    auditor: str
    group: str
    metrics: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    error: str | None = None  # set when the auditor raised: the gate then blocks
    seconds: float = 0.0

    @property
    def verdict(self) -> Verdict:
        if self.error is not None:
            return Verdict.FAIL
        return combine_verdicts(c.verdict for c in self.checks)


@runtime_checkable
class MembershipScorer(Protocol):
    """The white-box hook of a generator: a per-slice membership score (higher: more likely a training slice).

    `generators.base.Generator` implements it; an adapter for a model trained elsewhere needs only this.
    """
    model_card: dict

    def membership_scores(self, slices: SliceSet, seed: int) -> np.ndarray:
        """(N,) float scores for the N slices of `slices`, deterministic for a seed."""


@dataclass
class AuditContext:
    train: SliceSet
    holdout: SliceSet
    synthetic: SliceSet
    test: SliceSet | None = None  # real patients neither the generator nor the segmenter saw (utility)
    generator: MembershipScorer | None = None  # for white-box attacks
    # (name, settings) -> a fresh, untrained generator: the registry, handed down by the application so that
    # auditors that train reference models (offline LiRA) never import the generators package.
    generator_factory: Callable[[str, dict], Any] | None = None
    model_card: dict | None = None
    seed: int = 0
    device: str = "cpu"
    thresholds: dict[str, float] = field(default_factory=dict)  # overrides keyed by check name
    options: dict[str, Any] = field(default_factory=dict)  # validated against OPTIONS by the audit
    quiet: bool = False
    cache: dict[str, Any] = field(default_factory=dict)  # shared feature extractors, trained once per audit
    executor: Any = None  # an auditors.executors.Executor for independent jobs; None: this process (local)

    def map_jobs(self, fn: Callable[[Any], Any], jobs, *, workers: int | None = None, desc: str = "jobs") -> list:
        """[fn(job) for job in jobs] on the audit's executor (local threads / CUDA streams, or Ray tasks)."""
        from .executors import LocalExecutor

        return (self.executor or LocalExecutor()).map(fn, jobs, workers=workers, device=self.device,
                                                      quiet=self.quiet, desc=desc)

    def threshold(self, name: str, default: float) -> float:
        return float(self.thresholds.get(name, default))

    def option(self, name: str) -> Any:
        """A declared option's value: the one given, else its default. An undeclared name is a bug."""
        return option_value(self.options, name)

    def shared(self, key: str, factory: Callable[[], Any]) -> Any:
        """Build an expensive object (an embedding network, a segmenter) once and share it between auditors."""
        if key not in self.cache:
            self.cache[key] = factory()
        return self.cache[key]


@dataclass(frozen=True)
class CohortSizes:
    """Patients per split, the unit every planning figure is computed for."""
    train: int
    holdout: int
    synthetic: int
    test: int = 0

    @classmethod
    def of(cls, ctx: "AuditContext") -> "CohortSizes":
        return cls(train=len(ctx.train.subjects), holdout=len(ctx.holdout.subjects),
                   synthetic=len(ctx.synthetic.subjects), test=len(ctx.test.subjects) if ctx.test is not None else 0)


PLAN_KEYS = ("honest_pass_probability", "smallest_detectable")  # the two figures `plan` and audit.html print


class Auditor(ABC):
    name: ClassVar[str]
    group: ClassVar[str]
    # check name -> (default threshold, op, description): the spec's [thresholds] defaults
    default_thresholds: ClassVar[dict[str, tuple[float, str, str]]] = {}
    options: ClassVar[tuple[Option, ...]] = ()  # the settings this auditor reads through ctx.option

    @abstractmethod
    def run(self, ctx: AuditContext) -> AuditResult:
        ...

    def plan(self, sizes: CohortSizes, thresholds: dict[str, float], seed: int = 0) -> dict[str, dict[str, Any]]:
        """Cohort-size planning per check of this auditor, at these sizes and thresholds (defaults where absent).

        Returns {check name: {"honest_pass_probability": chance that an honest generator's cohort passes,
        "smallest_detectable": the smallest leak / fault the check catches with 80% probability,
        "detectable_unit": what that number measures, ...}}. An auditor that cannot plan returns {} and
        `cmri-release plan` says so for its checks.
        """
        return {}

    def check(self, ctx: AuditContext, name: str, estimate, lower=None, upper=None, confidence=None,
              details: str = "", decide: str = "", plan: dict | None = None) -> Check:
        """A Check with this auditor's default threshold, overridden by the context's thresholds."""
        default, op, description = self.default_thresholds[name]
        return Check(name=name, estimate=estimate, lower=lower, upper=upper, confidence=confidence,
                     threshold=ctx.threshold(name, default), op=op, description=description, details=details,
                     decide=decide, plan=dict(plan or {}))

    def exact_check(self, ctx: AuditContext, name: str, value, details: str = "") -> Check:
        default, op, description = self.default_thresholds[name]
        return Check.exact(name, value, ctx.threshold(name, default), op, description=description, details=details)


AUDITORS: dict[str, type[Auditor]] = {}


def register_auditor(cls: type[Auditor]) -> type[Auditor]:
    if cls.group not in GROUPS:
        raise ValueError(f"auditor {cls.name!r} has unknown group {cls.group!r}")
    if cls.name in AUDITORS:
        raise ValueError(f"auditor {cls.name!r} is registered twice")
    for check, (_, op, _) in cls.default_thresholds.items():
        if op not in OPS or check.split(".", 1)[0] != cls.group:
            raise ValueError(f"auditor {cls.name!r}: check {check!r} ({op}) must be '{cls.group}.<metric>' with op "
                             f"in {OPS}")
    register_options(*cls.options)
    AUDITORS[cls.name] = cls
    return cls


def create_auditor(name: str) -> Auditor:
    if name not in AUDITORS:
        raise ValueError(f"unknown auditor {name!r}; known: {', '.join(sorted(AUDITORS))}")
    return AUDITORS[name]()


def auditors_in(groups) -> list[str]:
    return [name for name, cls in AUDITORS.items() if cls.group in groups]


def default_thresholds() -> dict[str, tuple[float, str, str]]:
    out = {}
    for cls in AUDITORS.values():
        out.update(cls.default_thresholds)
    return out
