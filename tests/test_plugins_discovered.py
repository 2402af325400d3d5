"""Plug-ins cannot be silently missed: importing a package registers exactly what importing every one of its
modules on disk registers. A module whose `@register_*` class is not imported by its group's `__init__` (so it
would never run, with no warning) fails here, naming the module.

Runs in a fresh interpreter: inside pytest every module may already have been imported by another test.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import importlib, json, pkgutil, sys
package, registry_module, registry_name = sys.argv[1:4]
registry = getattr(importlib.import_module(registry_module), registry_name)
importlib.import_module(package)
before = {name: getattr(entry, "__module__", repr(entry)) for name, entry in registry.items()}
root = importlib.import_module(package)
for info in pkgutil.walk_packages(root.__path__, package + "."):
    importlib.import_module(info.name)
after = {name: getattr(entry, "__module__", repr(entry)) for name, entry in registry.items()}
print(json.dumps({"before": before, "after": after}))
"""

REGISTRIES = [("auditors", "auditors.base", "AUDITORS"), ("generators", "generators.base", "GENERATORS"),
              ("auditors", "auditors.features.spaces", "FEATURE_SPACES")]


def registered(package: str, module: str, name: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, package, module, name], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("package, module, name", REGISTRIES, ids=[r[2] for r in REGISTRIES])
def test_importing_the_package_registers_every_plugin_on_disk(package, module, name):
    found = registered(package, module, name)
    missed = {k: v for k, v in found["after"].items() if k not in found["before"]}
    assert missed == {}, f"registered only when imported directly (add the import to its package): {missed}"
    assert found["before"], f"{module}.{name} is empty after `import {package}`"
