"""The auditor interface: one AuditContext in, one AuditResult out; checks that know their direction.

A check is `{name, value, threshold, op, passed}` with `name = <group>.<metric>`. A check whose
value is missing or not a number fails: the gate fails closed.
"""
from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from cmri_release.sliceset import SliceSet

GROUPS = ("privacy", "fidelity", "utility")
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
}


@dataclass
class Check:
    name: str  # "<group>.<metric>"
    value: float | None
    threshold: float
    op: str  # passes when `value op threshold`
    passed: bool = False
    description: str = ""  # what the check guards against, for reports
    details: str = ""  # how the value was obtained (CI, counts), for reports

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown operator {self.op!r} in check {self.name}")
        if self.name.split(".", 1)[0] not in GROUPS or "." not in self.name:
            raise ValueError(f"check name {self.name!r} must be '<group>.<metric>' with group in {GROUPS}")
        ok = self.value is not None and isinstance(self.value, (int, float)) and math.isfinite(self.value)
        self.passed = bool(ok and OPS[self.op](self.value, self.threshold))

    @property
    def margin(self) -> float | None:
        """How far the value is on the good side of the threshold (negative: by how much it failed)."""
        if self.value is None or not math.isfinite(self.value):
            return None
        return self.value - self.threshold if self.op.startswith(">") else self.threshold - self.value

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "threshold": self.threshold, "op": self.op,
                "passed": self.passed, "description": self.description, "details": self.details}


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


@dataclass
class AuditContext:
    train: SliceSet
    holdout: SliceSet
    synthetic: SliceSet
    test: SliceSet | None = None  # real patients neither the generator nor the segmenter saw (utility)
    generator: Any = None  # a generators.base.Generator, for white-box attacks
    model_card: dict | None = None
    seed: int = 0
    device: str = "cpu"
    thresholds: dict[str, float] = field(default_factory=dict)  # overrides keyed by check name
    options: dict[str, Any] = field(default_factory=dict)  # budgets, e.g. {"utility_epochs": 8}
    quiet: bool = False
    cache: dict[str, Any] = field(default_factory=dict)  # shared feature extractors, trained once per audit

    def threshold(self, name: str, default: float) -> float:
        return float(self.thresholds.get(name, default))

    def shared(self, key: str, factory: Callable[[], Any]) -> Any:
        """Build an expensive object (an embedding network, a segmenter) once and share it between auditors."""
        if key not in self.cache:
            self.cache[key] = factory()
        return self.cache[key]


class Auditor(ABC):
    name: ClassVar[str]
    group: ClassVar[str]
    # check name -> (default threshold, op, description): the spec's [thresholds] defaults
    default_thresholds: ClassVar[dict[str, tuple[float, str, str]]] = {}

    @abstractmethod
    def run(self, ctx: AuditContext) -> AuditResult:
        ...

    def check(self, ctx: AuditContext, name: str, value, details: str = "") -> Check:
        """A Check with this auditor's default threshold, overridden by the context's thresholds."""
        default, op, description = self.default_thresholds[name]
        return Check(name=name, value=None if value is None else float(value), threshold=ctx.threshold(name, default),
                     op=op, description=description, details=details)


AUDITORS: dict[str, type[Auditor]] = {}


def register_auditor(cls: type[Auditor]) -> type[Auditor]:
    if cls.group not in GROUPS:
        raise ValueError(f"auditor {cls.name!r} has unknown group {cls.group!r}")
    if cls.name in AUDITORS:
        raise ValueError(f"auditor {cls.name!r} is registered twice")
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
