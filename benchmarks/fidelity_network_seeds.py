"""How much the fidelity checks in learned spaces move with the audit seed, and which part of the seed moves them.

The demo's real cohort (the default spec's phantom, split as the release splits it, 32 px) and the demo's generator
(`flow`, compact, 2 epochs, the spec's seed) with its 100 synthetic patients; also the real test patients as an
honest "synthetic" cohort. For audit seeds 0..N-1 the fidelity auditors that read learned spaces (and, as controls,
the texture ones) run twice:
- `retrained`: everything seeded by the audit seed (the segmenter and embedding that define the spaces included);
- `fixed_networks`: the networks and features of seed 0, everything else (matched draws, bootstraps) of the seed.

    python benchmarks/fidelity_network_seeds.py OUT.jsonl [--seeds 5] [--networks K] [--retrained-only] [--quick]

`--networks K`: the audit option `fidelity_networks`; `--retrained-only`: skip the fixed-networks runs.

One JSON line per (cohort, mode, seed): each check's [estimate, lower, upper, verdict].
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditors.base import AuditContext  # noqa: E402
from auditors.runner import run_auditors  # noqa: E402

AUDITORS = ["feature_distance", "prdc", "diversity", "discriminator", "texture"]
NETWORK_KEYS = ("features.", "embedding", "segmentation.")  # what the spaces' networks put in the audit cache


def checks(ctx: AuditContext) -> dict:
    out = {}
    for result in run_auditors(ctx, ["fidelity"], AUDITORS):
        if result.error:
            out[result.auditor] = f"error: {result.error}"
        for c in result.checks:
            out[c.name] = [c.estimate, c.lower, c.upper, str(getattr(c.verdict, "value", c.verdict))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--networks", type=int, default=1)
    ap.add_argument("--retrained-only", action="store_true")
    ap.add_argument("--quick", action="store_true", help="40 phantom patients, 1 epoch, 8 synthetic, 2 seeds")
    args = ap.parse_args()

    from cmri_release.audit import check_options
    from cmri_release.preprocess import PreprocessConfig
    from cmri_release.release import load_data
    from cmri_release.spec import default_spec
    from generators import create_generator
    from generators.synthesis import synthesize

    spec = default_spec(Path.cwd())
    epochs, n_syn, seeds = 2, spec.synthesis.subjects, args.seeds
    if args.quick:
        spec = replace(spec, data=replace(spec.data, phantom=replace(spec.data.phantom, subjects=40)))
        epochs, n_syn, seeds = 1, 8, 2
    data = load_data(spec, PreprocessConfig(size=spec.data.size), quiet=True)
    gen = create_generator("flow", network="compact")
    gen.fit(data.train, None, epochs=epochs, device="cpu", seed=spec.seed, quiet=True)
    cohorts = {"generator": synthesize(gen, n_syn, seed=spec.seed), "real test patients": data.test}
    options = check_options({**spec.audit.audit_options(), "fidelity_networks": args.networks})
    with args.out.open("w") as out:
        for name, synthetic in cohorts.items():
            base = None
            for mode in ("retrained",) if args.retrained_only else ("retrained", "fixed_networks"):
                for seed in range(seeds):
                    ctx = AuditContext(train=data.train, holdout=data.holdout, synthetic=synthetic, seed=seed,
                                       options=options, quiet=True)
                    if mode == "fixed_networks":
                        ctx.cache.update({k: v for k, v in base.cache.items() if k.startswith(NETWORK_KEYS)})
                    start = time.perf_counter()
                    row = {"cohort": name, "mode": mode, "seed": seed, "networks": args.networks, "checks": checks(ctx),
                           "seconds": round(time.perf_counter() - start, 1)}
                    if mode == "retrained" and seed == 0:
                        base = ctx
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
