"""The release spec: one TOML file, validated into frozen dataclasses before anything runs.

Every problem is reported as `SpecError("<file>: [section] key: problem (did you mean 'x'?)")`, so a
typo costs a second, not a three-minute training run. Relative paths resolve against the spec's
folder, so a spec and its cohorts can move together. `default_spec_text()` is the commented default
spec that `demo --write-spec` writes; it parses back to exactly the defaults.
"""
from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from .core.errors import SpecError

GROUPS = ("privacy", "fidelity", "utility")
FORMATS = ("nifti", "dicom", "nnunet", "monai", "dicom-seg")  # cmri_release/exports: nnunet, monai, dicom-seg
MASK_SOURCES = ("generated", "holdout")
ACCOUNTANTS = ("prv", "rdp")


@dataclass(frozen=True)
class PhantomSpec:
    subjects: int = 250  # 100 train, 100 holdout, 50 test: what the audit needs to show anything
    seed: int = 0  # the phantom's own seed: which synthetic "patients" the real cohort holds
    vendors: tuple[str, ...] | None = None  # None: every vendor style of the phantom


@dataclass(frozen=True)
class SplitSpec:
    """Shares of patients (never slices) per split; test may be 0 (the audit then uses holdout)."""

    train: float = 0.4
    holdout: float = 0.4
    test: float = 0.2

    def fractions(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k != "test" or v > 0}


@dataclass(frozen=True)
class DataSpec:
    size: int = 32  # slices are size x size pixels after preprocessing (the demo's CPU budget; 64+ for real use)
    train: Path | None = None
    holdout: Path | None = None
    test: Path | None = None
    cohort: Path | None = None
    phantom: PhantomSpec | None = None
    split: SplitSpec = SplitSpec()

    @property
    def source(self) -> str:
        """"paths" (train/holdout/test given), "cohort" (one cohort, split here) or "phantom"."""
        if self.phantom is not None:
            return "phantom"
        return "cohort" if self.cohort is not None else "paths"

    def input_paths(self) -> dict[str, Path]:
        return {k: getattr(self, k) for k in ("train", "holdout", "test", "cohort") if getattr(self, k) is not None}


@dataclass(frozen=True)
class GeneratorSpec:
    name: str = "flow"
    epochs: int | None = 2  # the demo's budget (2 passes over 100 patients); None when `minutes` is given
    minutes: float | None = None
    device: str = "cpu"
    model: Path | None = None  # a model folder to load instead of training


@dataclass(frozen=True)
class PrivacySpec:
    dp: bool = False
    epsilon: float = 10.0
    delta: float | None = None  # None: 1 / (10 x training patients)
    max_grad_norm: float = 1.0
    accountant: str = "prv"


@dataclass(frozen=True)
class SynthesisSpec:
    subjects: int = 100
    vendors: tuple[str, ...] | None = None  # None: the training cohort's vendors
    masks: str = "generated"  # "generated" (the mask generator) or "holdout" (the holdout patients' masks)


@dataclass(frozen=True)
class AuditSpec:
    groups: tuple[str, ...] = GROUPS
    utility_epochs: float = 6.0  # passes over the real train slices per segmenter of the utility audit
    options: Mapping[str, object] = field(default_factory=dict)  # [audit.options]: declared auditor options

    def audit_options(self) -> dict:
        """What the audit runs with: the declared options, `utility_epochs` from its own key."""
        return {**dict(self.options), "utility_epochs": self.utility_epochs}


EXECUTORS = ("local", "ray")  # auditors.executors.EXECUTORS (not imported: the spec reader stays light)


@dataclass(frozen=True)
class ComputeSpec:
    """Where the audit's independent jobs run: "local" (threads / CUDA streams) or "ray" (a local Ray instance
    started and stopped by the release, or the cluster at `ray_address`)."""
    executor: str = "local"
    ray_address: str | None = None


@dataclass(frozen=True)
class ExportSpec:
    out: Path = Path("release")
    formats: tuple[str, ...] = ("nifti",)
    audit_dir: Path | None = None  # None: "<out>.audit" beside the release folder

    @property
    def audit_path(self) -> Path:
        return self.audit_dir if self.audit_dir is not None else self.out.with_name(self.out.name + ".audit")


@dataclass(frozen=True)
class ReleaseSpec:
    data: DataSpec
    generator: GeneratorSpec
    privacy: PrivacySpec
    synthesis: SynthesisSpec
    audit: AuditSpec
    export: ExportSpec
    thresholds: Mapping[str, float]  # effective thresholds: the auditors' defaults with the spec's overrides
    seed: int = 0
    compute: ComputeSpec = field(default_factory=ComputeSpec)
    source: str = field(default="<default>", compare=False)  # the spec file, for messages

    def to_dict(self) -> dict:
        """JSON-ready form (paths as strings) for the manifest and the reports."""
        def plain(value):
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            return value

        out = {name: plain(asdict(getattr(self, name)))
               for name in ("data", "generator", "privacy", "synthesis", "audit", "export", "compute")}
        out["export"]["audit_dir"] = str(self.export.audit_path)
        out["thresholds"] = dict(self.thresholds)
        out["seed"] = self.seed
        return out


# ---------------------------------------------------------------------------------------------------------------
# Reading tables with messages that name the key


def _nearest(key: str, allowed) -> str:
    match = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


class _Table:
    """One TOML table: typed getters that raise SpecError naming the file, section and key."""

    def __init__(self, source: str, section: str, table, allowed, base_dir: Path):
        self.source, self.section, self.base_dir = source, section, base_dir
        if not isinstance(table, dict):
            raise self.error(None, f"expected a table, got {_type_name(table)}")
        self.table = table
        for key in table:
            if key not in allowed:
                raise self.error(key, f"unknown key{_nearest(key, allowed)}; valid keys: {', '.join(allowed)}")

    def error(self, key, problem: str) -> SpecError:
        where = f"[{self.section}]" if self.section else "(top level)"
        return SpecError(f"{self.source}: {where}{'' if key is None else ' ' + key}: {problem}")

    def has(self, key) -> bool:
        return key in self.table

    def integer(self, key, default, minimum=None, maximum=None):
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_type_name(value)} {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}, got {value}")
        return value

    def number(self, key, default, positive=False, minimum=None, below=None):
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {_type_name(value)} {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise self.error(key, f"must be a finite number, got {value}")
        if positive and value <= 0:
            raise self.error(key, f"must be greater than 0, got {value:g}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum:g}, got {value:g}")
        if below is not None and value >= below:
            raise self.error(key, f"must be below {below:g}, got {value:g}")
        return value

    def boolean(self, key, default):
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_type_name(value)} {value!r}")
        return value

    def string(self, key, default, choices=None):
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {_type_name(value)} {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
                                  f"{_nearest(value, choices)}")
        return value

    def strings(self, key, default, choices=None):
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"expected a non-empty list of strings, got {value!r}")
        for v in value:
            if choices is not None and v not in choices:
                raise self.error(key, f"{v!r} is not one of {', '.join(repr(c) for c in choices)}"
                                      f"{_nearest(v, choices)}")
        if len(set(value)) != len(value):
            raise self.error(key, f"lists {value!r} with repeats")
        return tuple(value)

    def path(self, key, must_exist=False, kind="folder"):
        if key not in self.table:
            return None
        value = self.table[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a path string, got {_type_name(value)} {value!r}")
        path = Path(value).expanduser()
        path = (path if path.is_absolute() else self.base_dir / path).resolve()
        if must_exist:
            if not path.exists():
                raise self.error(key, f"{path} does not exist")
            if kind == "folder" and not path.is_dir():
                raise self.error(key, f"{path} is not a folder")
        return path

    def sub(self, key, allowed) -> "_Table | None":
        if key not in self.table:
            return None
        name = f"{self.section}.{key}" if self.section else key
        return _Table(self.source, name, self.table[key], allowed, self.base_dir)


# ---------------------------------------------------------------------------------------------------------------
# Sections


def _data(t: _Table) -> DataSpec:
    size = t.integer("size", DataSpec.size, minimum=8, maximum=1024)
    paths = {k: t.path(k, must_exist=True) for k in ("train", "holdout", "test", "cohort")}
    ph = t.sub("phantom", ("subjects", "seed", "vendors"))
    phantom = None
    if ph is not None:
        phantom = PhantomSpec(subjects=ph.integer("subjects", PhantomSpec.subjects, minimum=3),
                              seed=ph.integer("seed", PhantomSpec.seed, minimum=0),
                              vendors=ph.strings("vendors", None))
    sp = t.sub("split", ("train", "holdout", "test"))
    split = SplitSpec()
    if sp is not None:
        split = SplitSpec(train=sp.number("train", 0.0, minimum=0.0), holdout=sp.number("holdout", 0.0, minimum=0.0),
                          test=sp.number("test", 0.0, minimum=0.0))
        if abs(split.train + split.holdout + split.test - 1.0) > 1e-6:
            raise sp.error(None, f"fractions must sum to 1, got {split.train:g} + {split.holdout:g} + "
                                 f"{split.test:g} = {split.train + split.holdout + split.test:g}")
        if split.train <= 0 or split.holdout <= 0:
            raise sp.error(None, "train and holdout must both get a share above 0 (the privacy audit compares them)")

    given = [name for name, on in (("train/holdout/test", any(paths[k] for k in ("train", "holdout", "test"))),
                                   ("cohort", paths["cohort"] is not None), ("phantom", phantom is not None)) if on]
    if not given:
        raise t.error(None, "no data source: give `train` and `holdout` (and optionally `test`) cohort folders, "
                            "one `cohort` folder to split by patient, or a [data.phantom] table")
    if len(given) > 1:
        raise t.error(None, f"give one data source, not {' and '.join(given)}")
    if given[0] == "train/holdout/test":
        for key in ("train", "holdout"):
            if paths[key] is None:
                raise t.error(key, "missing: explicit cohorts need both `train` and `holdout`")
        if sp is not None:
            raise t.error("split", "applies only to `cohort` or [data.phantom], not to explicit train/holdout cohorts")
        chosen = [p for p in (paths["train"], paths["holdout"], paths["test"]) if p is not None]
        if len(set(chosen)) != len(chosen):
            raise t.error(None, "train, holdout and test must be different folders (patients must not overlap)")
    return DataSpec(size=size, phantom=phantom, split=split, **paths)


def _generator(t: _Table, known_generators) -> GeneratorSpec:
    model = t.path("model", must_exist=True)
    if model is not None:
        for key in ("name", "epochs", "minutes"):
            if t.has(key):
                raise t.error(key, "a loaded `model` is not trained again: remove this key or `model`")
    name = t.string("name", GeneratorSpec.name)
    if model is None and known_generators is not None and name not in known_generators:
        raise t.error("name", f"unknown generator {name!r}{_nearest(name, known_generators)}; "
                              f"known: {', '.join(sorted(known_generators)) or 'none registered'}")
    epochs = t.integer("epochs", None, minimum=1)
    minutes = t.number("minutes", None, positive=True)
    if epochs is not None and minutes is not None:
        raise t.error("minutes", "give `epochs` or `minutes`, not both")
    if epochs is None and minutes is None and model is None:
        epochs = GeneratorSpec.epochs
    device = t.string("device", GeneratorSpec.device)
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise t.error("device", f"must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return GeneratorSpec(name=name, epochs=epochs, minutes=minutes, device=device, model=model)


def _privacy(t: _Table) -> PrivacySpec:
    return PrivacySpec(dp=t.boolean("dp", PrivacySpec.dp),
                       epsilon=t.number("epsilon", PrivacySpec.epsilon, positive=True),
                       delta=t.number("delta", None, positive=True, below=1.0),
                       max_grad_norm=t.number("max_grad_norm", PrivacySpec.max_grad_norm, positive=True),
                       accountant=t.string("accountant", PrivacySpec.accountant, choices=ACCOUNTANTS))


def _synthesis(t: _Table) -> SynthesisSpec:
    return SynthesisSpec(subjects=t.integer("subjects", SynthesisSpec.subjects, minimum=1),
                         vendors=t.strings("vendors", None),
                         masks=t.string("masks", SynthesisSpec.masks, choices=MASK_SOURCES))


def _audit(t: _Table) -> AuditSpec:
    groups = t.strings("groups", AuditSpec.groups, choices=GROUPS)
    if "privacy" not in groups:
        raise t.error("groups", "must include 'privacy': a release is never gated without its privacy audit")
    options = {}
    table = t.sub("options", _declared_options())
    if table is not None:  # unknown names were refused with their nearest match; types and ranges here
        from .audit import check_options

        if "utility_epochs" in table.table:
            raise table.error("utility_epochs", "set it as [audit] utility_epochs, not under [audit.options]")
        options = check_options(table.table, f"{t.source}: [audit.options]")
    return AuditSpec(groups=tuple(g for g in GROUPS if g in groups),
                     utility_epochs=t.number("utility_epochs", AuditSpec.utility_epochs, positive=True),
                     options=dict(options))


def _declared_options() -> tuple[str, ...]:
    import auditors  # noqa: F401 - importing registers every auditor and the options it declares
    from auditors.base import OPTIONS

    return tuple(sorted(OPTIONS))


def _compute(t: _Table) -> ComputeSpec:
    executor = t.string("executor", ComputeSpec.executor, choices=EXECUTORS)
    address = t.string("ray_address", None)
    if address is not None and executor != "ray":
        raise t.error("ray_address", "applies only with executor = \"ray\"")
    return ComputeSpec(executor=executor, ray_address=address)


def _export(t: _Table) -> ExportSpec:
    out = t.path("out") or (t.base_dir / ExportSpec.out).resolve()
    if out.exists() and not out.is_dir():
        raise t.error("out", f"{out} is a file, not a folder")
    formats = t.strings("formats", ExportSpec.formats, choices=FORMATS)
    if "nifti" not in formats:
        raise t.error("formats", "must include 'nifti': the label maps ship only in data/ (NIfTI); add 'dicom' "
                                 "beside it for DICOM images")
    audit_dir = t.path("audit_dir")
    if audit_dir is not None and audit_dir.exists() and not audit_dir.is_dir():
        raise t.error("audit_dir", f"{audit_dir} is a file, not a folder")
    return ExportSpec(out=out, formats=tuple(f for f in FORMATS if f in formats), audit_dir=audit_dir)


def _thresholds(t: _Table | None, known_checks: Mapping[str, tuple]) -> dict[str, float]:
    out = {name: float(entry[0]) for name, entry in known_checks.items()}
    if t is None:
        return out
    for name in t.table:
        out[name] = t.number(name, None)
    return out


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _check_outputs(spec: ReleaseSpec, source: str):
    """The release and audit folders may not sit inside (or around) an input: never write into real data."""
    inputs = dict(spec.data.input_paths())
    if spec.generator.model is not None:
        inputs["model"] = spec.generator.model
    for key, out in (("out", spec.export.out), ("audit_dir", spec.export.audit_path)):
        for name, path in inputs.items():
            if _overlaps(out, path):
                raise SpecError(f"{source}: [export] {key}: {out} overlaps the input `{name}` ({path}); "
                                f"write releases outside every input folder")
    if _overlaps(spec.export.audit_path, spec.export.out):
        raise SpecError(f"{source}: [export] audit_dir: {spec.export.audit_path} overlaps the release folder "
                        f"{spec.export.out}; the audit is written whatever the verdict, the release only on pass")


# ---------------------------------------------------------------------------------------------------------------
# Entry points

_SECTIONS = ("seed", "data", "generator", "privacy", "synthesis", "thresholds", "audit", "export", "compute")


def _registries(known_checks, known_generators):
    if known_checks is None:
        import auditors  # noqa: F401 - importing registers every auditor
        from auditors.base import default_thresholds

        known_checks = default_thresholds()
    if known_generators is None:
        import generators  # noqa: F401 - importing registers every generator
        from generators.base import GENERATORS

        known_generators = tuple(GENERATORS)
    return known_checks, known_generators


def spec_from_dict(doc: dict, source: str, base_dir: Path, known_checks: Mapping[str, tuple] | None = None,
                   known_generators=None) -> ReleaseSpec:
    """Validate a parsed TOML document. `known_checks` defaults to the registered auditors' thresholds."""
    known_checks, known_generators = _registries(known_checks, known_generators)
    base_dir = Path(base_dir).resolve()
    top = _Table(source, "", doc, _SECTIONS, base_dir)
    seed = top.integer("seed", 0, minimum=0)

    def section(name, allowed):
        return top.sub(name, allowed) or _Table(source, name, {}, allowed, base_dir)

    data = top.sub("data", ("size", "train", "holdout", "test", "cohort", "phantom", "split"))
    if data is None:
        raise SpecError(f"{source}: [data]: missing: say which cohort to release from (or use [data.phantom])")
    thresholds = top.sub("thresholds", tuple(known_checks))
    spec = ReleaseSpec(
        data=_data(data),
        generator=_generator(section("generator", ("name", "epochs", "minutes", "device", "model")), known_generators),
        privacy=_privacy(section("privacy", ("dp", "epsilon", "delta", "max_grad_norm", "accountant"))),
        synthesis=_synthesis(section("synthesis", ("subjects", "vendors", "masks"))),
        audit=_audit(section("audit", ("groups", "utility_epochs", "options"))),
        export=_export(section("export", ("out", "formats", "audit_dir"))),
        thresholds=MappingProxyType(_thresholds(thresholds, known_checks)),
        seed=seed, source=source, compute=_compute(section("compute", ("executor", "ray_address"))),
    )
    if spec.privacy.dp and spec.generator.model is not None:
        raise SpecError(f"{source}: [privacy] dp: applies to training; the loaded model's own privacy ledger "
                        f"(in its model card) is what the release reports")
    if spec.privacy.dp and spec.generator.epochs is None:
        # Caught here, before minutes of data preparation: DP-SGD calibrates its noise to a known number of steps.
        from generators.base import DP_EPOCHS_REASON

        raise SpecError(f"{source}: [generator] minutes: DP training needs `epochs` ({DP_EPOCHS_REASON})")
    _check_outputs(spec, source)
    return spec


def parse_spec(text: str, source: str = "<spec>", base_dir: Path | str = ".", **registries) -> ReleaseSpec:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: not valid TOML: {exc}") from None
    return spec_from_dict(doc, source, Path(base_dir), **registries)


def load_spec(path: Path | str, **registries) -> ReleaseSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc}") from None
    return parse_spec(text, source=str(path), base_dir=path.resolve().parent, **registries)


def default_spec(base_dir: Path | str = ".", known_checks: Mapping[str, tuple] | None = None) -> ReleaseSpec:
    """The defaults, built from the dataclasses (not by parsing), so tests can compare the two."""
    known_checks, _ = _registries(known_checks, ())
    base_dir = Path(base_dir).resolve()
    return ReleaseSpec(data=DataSpec(phantom=PhantomSpec()), generator=GeneratorSpec(), privacy=PrivacySpec(),
                       synthesis=SynthesisSpec(), audit=AuditSpec(),
                       export=ExportSpec(out=(base_dir / ExportSpec.out).resolve()),
                       thresholds=MappingProxyType(_thresholds(None, known_checks)), seed=0, source="<default>")


def with_output(spec: ReleaseSpec, out: Path) -> ReleaseSpec:
    """The same spec writing to another folder (demo --out); the audit folder follows unless set explicitly."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise SpecError(f"{out}: is a file, not a folder")
    spec = replace(spec, export=replace(spec.export, out=out))
    _check_outputs(spec, spec.source)
    return spec


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def default_spec_text(known_checks: Mapping[str, tuple] | None = None) -> str:
    """The default spec as commented TOML: what `demo` runs, and a starting point for a real release."""
    known_checks, _ = _registries(known_checks, ())
    d, ph, sp, g, p, s, a, e = (DataSpec(), PhantomSpec(), SplitSpec(), GeneratorSpec(), PrivacySpec(),
                                SynthesisSpec(), AuditSpec(), ExportSpec())
    lines = [
        "# cmri-release spec. Relative paths resolve against this file's folder.",
        "# Run with:  cmri-release release THIS_FILE.toml   (exit 0 released, 1 blocked, 2 error)",
        "",
        "# One seed for the split, training, synthesis and the audit.",
        f"seed = {_toml(0)}",
        "",
        "[data]",
        "# Slices are cropped around the heart and resampled to size x size pixels.",
        f"size = {_toml(d.size)}",
        "# Give ONE data source:",
        "#  - explicit cohorts (cohort layout: <subject>/Info.cfg + NIfTI), patients must not overlap:",
        '#      train = "cohorts/train"',
        '#      holdout = "cohorts/holdout"   # real patients the generator never sees (privacy baseline)',
        '#      test = "cohorts/test"         # optional: real patients for the utility audit',
        "#  - one cohort split here by patient (see [data.split]):",
        '#      cohort = "cohorts/all"',
        "#  - or the procedural phantom (the demo):",
        "",
        "[data.phantom]",
        f"subjects = {_toml(ph.subjects)}",
        "# The phantom's own seed: which phantom patients make up the 'real' cohort.",
        f"seed = {_toml(ph.seed)}",
        '# vendors = ["Siemens", "Philips", "GE"]   # default: every vendor style',
        "",
        "# Shares of PATIENTS per split (never slices); they must sum to 1. Used with `cohort` or [data.phantom].",
        "[data.split]",
        f"train = {_toml(sp.train)}",
        f"holdout = {_toml(sp.holdout)}",
        f"test = {_toml(sp.test)}",
        "",
        "[generator]",
        "# flow (default), ddpm, vae or gan. Or load a trained model folder instead of training:",
        '#   model = "models/flow"     (then leave out name / epochs / minutes)',
        f"name = {_toml(g.name)}",
        "# Training budget: epochs = N (reproducible) or minutes = M (a wall-clock cap). DP needs epochs.",
        f"epochs = {_toml(g.epochs)}",
        f"device = {_toml(g.device)}",
        "",
        "[privacy]",
        "# Patient-level differential privacy (DP-SGD with Opacus); each patient is one DP unit.",
        f"dp = {_toml(p.dp)}",
        f"epsilon = {_toml(p.epsilon)}",
        "# delta = 1e-5            # default: 1 / (10 x training patients)",
        f"max_grad_norm = {_toml(p.max_grad_norm)}",
        f"accountant = {_toml(p.accountant)}      # prv or rdp; the ledger reports both, the larger epsilon counts",
        "",
        "[synthesis]",
        f"subjects = {_toml(s.subjects)}",
        '# vendors = ["Siemens", "GE"]   # default: the training cohort\'s vendors',
        '# Masks: "generated" (the mask generator: no real patient\'s anatomy is released) or "holdout".',
        f"masks = {_toml(s.masks)}",
        "",
        "[audit]",
        "# Groups to audit; privacy is always included.",
        f"groups = {_toml(a.groups)}",
        "# Epochs of each segmenter the utility audit trains (time against precision).",
        f"utility_epochs = {_toml(a.utility_epochs)}",
        "# Auditor options (`cmri-release audit --help` lists every declared one), e.g. mia_bootstrap = 2000.",
        "[audit.options]" if a.options else "# [audit.options]",
        *[f"{k} = {_toml(v)}" for k, v in sorted(a.options.items())],
        "",
        "[compute]",
        '# Where the audit\'s independent jobs run: "local" (threads / CUDA streams) or "ray" (pip install',
        "# 'cmri-release[distributed]'): a local Ray instance, started and stopped by the release, or a cluster.",
        f"executor = {_toml(ComputeSpec.executor)}",
        '# ray_address = "ray://head-node:10001"   # join this Ray cluster (executor = "ray")',
        "",
        "# Thresholds keyed by check name; a check passes when `value op threshold`.",
        "[thresholds]",
    ]
    for name, (default, op, description) in sorted(known_checks.items()):
        lines.append(f"# passes when value {op} threshold: {description}".rstrip())
        lines.append(f"{_toml(name)} = {_toml(float(default))}")
    lines += [
        "",
        "[export]",
        "# The release folder; it must not exist yet. It appears whole, and only when every check passes.",
        f"out = {_toml(str(e.out))}",
        '# "nifti" (the cohort layout with the label maps; required), plus "dicom" for de-identified MR images.',
        f"formats = {_toml(e.formats)}",
        '# audit_dir = "release.audit"   # default: <out>.audit, written whatever the verdict',
        "",
    ]
    return "\n".join(lines)
