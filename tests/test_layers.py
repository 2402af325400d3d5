"""The dependency direction, enforced over the import graph of the three packages.

    cmri_release (application: spec, pipeline, io, phantom, reporting, commands, cli)
        ↓
    generators    auditors        (side by side: neither imports the other)
        ↓             ↓
    cmri_release.core (data model, errors, file-system helpers; imports nothing of the project, no click)

Every import statement counts, also those inside functions and under TYPE_CHECKING, and `import_module("...")` with
a literal name: an arrow that runs back up is a design dependency even when it is deferred. No import cycle is
allowed anywhere, and `cmri_release/__init__.py` imports nothing (importing the core runs it).
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cmri_release", "generators", "auditors")
CORE = "cmri_release.core"
FORBIDDEN_IN_CORE = ("click",)


def layer(module: str) -> str:
    if module == CORE or module.startswith(CORE + "."):
        return "core"
    top = module.split(".", 1)[0]
    return "application" if top == "cmri_release" else top


# Which layers each layer may import (besides itself).
ALLOWED = {"core": set(), "generators": {"core"}, "auditors": {"core"},
           "application": {"core", "generators", "auditors"}}


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names one AST node imports (unresolved against the project)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module
        return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module" \
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return [node.args[0].value]
    return []


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({module: project modules it imports}, {module: outside top-level packages it imports})."""
    mods = modules(root)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    outside: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = _imported(node, module, path.name == "__init__.py")
            if not names:
                continue
            # `from a import b`: the module a.b when it is one, else a itself.
            hits = [n for n in names[1:] if n in mods] if isinstance(node, ast.ImportFrom) else []
            targets = hits or [names[0]] if isinstance(node, ast.ImportFrom) else names
            for name in targets:
                if name.split(".")[0] in PACKAGES:
                    edges[module].add(name if name in mods else _nearest_module(name, mods))
                else:
                    outside[module].add(name.split(".")[0])
        edges[module].discard(module)
    return edges, outside


def _nearest_module(name: str, mods) -> str:
    while name not in mods and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def back_arrows(edges: dict[str, set[str]], outside: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer(target) != layer(module) and layer(target) not in ALLOWED[layer(module)]:
                problems.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
        if layer(module) == "core":
            problems += [f"{module} (core) imports {name}" for name in sorted(outside[module] & set(FORBIDDEN_IN_CORE))]
    problems += [f"cmri_release/__init__.py imports {target}" for target in sorted(edges.get("cmri_release", ()))]
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def test_no_arrow_runs_back_up():
    assert back_arrows(*import_graph(ROOT)) == []


def test_no_import_cycle():
    assert cycles(import_graph(ROOT)[0]) == []


def _copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_checker_catches_an_injected_back_arrow_inside_a_function(tmp_path):
    root = _copy(tmp_path)
    target = root / "generators" / "base.py"
    target.write_text(target.read_text() + "\n\ndef _late():\n    from cmri_release.commands import train_cmd\n")
    assert back_arrows(*import_graph(root)) == [
        "generators.base (generators) imports cmri_release.commands.train_cmd (application)"]


def test_the_checker_catches_core_importing_up_or_click_and_plugins_importing_each_other(tmp_path):
    root = _copy(tmp_path)
    fs = root / "cmri_release" / "core" / "fs.py"
    fs.write_text(fs.read_text() + "\nimport click\nfrom .. import spec\n")
    auditor = root / "auditors" / "runner.py"
    auditor.write_text(auditor.read_text() + "\nimport importlib\nimportlib.import_module('generators.flow')\n")
    assert back_arrows(*import_graph(root)) == [
        "auditors.runner (auditors) imports generators.flow (generators)",
        "cmri_release.core.fs (core) imports cmri_release.spec (application)",
        "cmri_release.core.fs (core) imports click"]


def test_the_checker_catches_a_cycle(tmp_path):
    root = _copy(tmp_path)
    (root / "generators" / "solvers.py").write_text((root / "generators" / "solvers.py").read_text()
                                                    + "\nfrom . import schedules\n")
    (root / "generators" / "schedules.py").write_text((root / "generators" / "schedules.py").read_text()
                                                      + "\nfrom .solvers import *\n")
    assert ["generators.schedules", "generators.solvers"] in cycles(import_graph(root)[0])
