"""Does classifier-free guidance make the demo's `flow` generator more realistic? One run, the audit's discriminator.

    python benchmarks/bench_flow_guidance.py [--synthetic 30] [--epochs 2] > OUT.jsonl

The demo's real cohort (the default spec's phantom at 32 px, split as the release splits it); the compact `flow`
network trained for `--epochs` with the demo's seed, once with the shipped settings (no condition dropout) and once
with the label map and vendor dropped together 10% of the time (`cond_dropout` 0.1, what guidance needs); the
second model samples `--synthetic` patients from its mask generator at guidance 1, 1.5, 2 and 3 (two network
evaluations per solver step above 1). Each is scored by `discriminator_auc` of bench_generator_realism.py (0.5:
indistinguishable from the real holdout). One JSON line per row. Measured figures: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generator_realism import discriminator_auc  # noqa: E402
from generators.flow import FlowMatching  # noqa: E402

RUNS = ((0.0, (1.0,)), (0.1, (1.0, 1.5, 2.0, 3.0)))  # (cond_dropout, guidances sampled from that model)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    from cmri_release.preprocess import PreprocessConfig
    from cmri_release.release import load_data
    from cmri_release.spec import default_spec
    from generators.synthesis import synthesize

    spec = default_spec(Path.cwd())
    data = load_data(spec, PreprocessConfig(size=spec.data.size), quiet=True)
    for dropout, guidances in RUNS:
        gen = FlowMatching(network="compact", cond_dropout=dropout)
        start = time.perf_counter()
        gen.fit(data.train, None, epochs=args.epochs, device="cpu", seed=spec.seed, quiet=True)
        train_s = time.perf_counter() - start
        for guidance in guidances:
            gen.config["guidance"] = guidance  # a sampling setting: the trained weights are the same
            start = time.perf_counter()
            syn = synthesize(gen, args.synthetic, seed=spec.seed)
            synth_s = time.perf_counter() - start
            scored = discriminator_auc(data.train, data.holdout, syn)
            print(json.dumps({"cond_dropout": dropout, "guidance": guidance, "epochs": args.epochs,
                              "train_s": round(train_s, 1), "synth_s": round(synth_s, 1),
                              **{k: v for k, v in scored.items() if not isinstance(v, (list, dict))}}), flush=True)


if __name__ == "__main__":
    main()
