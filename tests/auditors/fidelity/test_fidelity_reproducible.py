"""The texture, spectrum and discriminator figures are the same, to the bit, at 1 and 2 threads for one seed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
sys.path.insert(0, "tests/auditors")
from conftest import make_heart_slices
from auditors.base import AuditContext
from auditors.fidelity.discriminator import DiscriminatorAuditor
from auditors.fidelity.texture import TextureAuditor
ctx = AuditContext(train=make_heart_slices(9, seed=0, prefix="tr"), holdout=make_heart_slices(6, seed=1, prefix="ho"),
                   synthetic=make_heart_slices(6, seed=3, prefix="sy"), seed=4, quiet=True)
print(json.dumps({c.name: [c.estimate, c.lower, c.upper] for a in (TextureAuditor(), DiscriminatorAuditor())
                  for c in a.run(ctx).checks}))
"""


def _run(threads: int) -> dict:
    root = Path(__file__).resolve().parents[3]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fidelity audits; default run under 15 min on a slow 2-core machine (CI runs it)
def test_same_figures_at_one_and_two_threads():
    one, two = _run(1), _run(2)
    assert set(one) == {"fidelity.texture_ratio", "fidelity.spectrum_ratio", "fidelity.structure_texture_ratio",
                        "fidelity.discriminator_auc"}
    assert one == two
