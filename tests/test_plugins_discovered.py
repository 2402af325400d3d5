"""Plug-ins cannot be silently missed: importing a package registers exactly what importing every one of its
modules on disk registers. A module whose `@register_*` class is not imported by its group's `__init__` (so it
would never run, with no warning) fails here, naming the plug-in.

Runs in a fresh interpreter: inside pytest every module may already have been imported by another test.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

REGISTRIES = [("auditors", "auditors.base", "AUDITORS"), ("generators", "generators.base", "GENERATORS"),
              ("auditors", "auditors.features.spaces", "FEATURE_SPACES")]

# For each registry: its names after `import PACKAGE`, then after importing every module of the package on disk.
PROBE = """
import importlib, json, pkgutil, sys
registries = json.loads(sys.argv[1])
for package, _, _ in registries:
    importlib.import_module(package)
def names():
    return {attr: sorted(getattr(importlib.import_module(module), attr)) for _, module, attr in registries}
before = names()
for package, _, _ in registries:
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        importlib.import_module(info.name)
print(json.dumps({"before": before, "after": names()}))
"""


def probe(root: Path, registries=REGISTRIES) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(registries)], capture_output=True, text=True,
                          timeout=300, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def registered() -> dict:
    return probe(ROOT)


@pytest.mark.parametrize("package, module, name", REGISTRIES, ids=[r[2] for r in REGISTRIES])
def test_importing_the_package_registers_every_plugin_on_disk(registered, package, module, name):
    missed = sorted(set(registered["after"][name]) - set(registered["before"][name]))
    assert missed == [], f"{module}.{name}: {missed} register only when their module is imported directly; " \
                         f"import it in its package's __init__"
    assert registered["before"][name], f"{module}.{name} is empty after `import {package}`"


FORGOTTEN = """from auditors.base import AuditResult, Auditor, register_auditor


@register_auditor
class Forgotten(Auditor):
    name = "forgotten"
    group = "privacy"

    def run(self, ctx):
        return AuditResult(self.name, self.group)
"""


def test_a_module_its_package_does_not_import_is_caught(tmp_path):
    for package in ("cmri_release", "generators", "auditors"):
        # byte code kept (copy2 keeps the mtimes it is checked against): the probe imports, it need not recompile
        shutil.copytree(ROOT / package, tmp_path / package)
    (tmp_path / "auditors" / "privacy" / "forgotten.py").write_text(FORGOTTEN)
    found = probe(tmp_path, REGISTRIES[:1])
    assert "forgotten" in found["after"]["AUDITORS"] and "forgotten" not in found["before"]["AUDITORS"]
