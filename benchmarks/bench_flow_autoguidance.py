"""Does autoguidance make the demo's `flow` generator more realistic? One run, the audit's discriminator.

    python benchmarks/bench_flow_autoguidance.py [--synthetic 30] [--epochs 2] [--weights 1.5,2,3] > OUT.jsonl

Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself") samples with
v = v_bad + w (v_good - v_bad), where the bad model is the same network with less training or capacity: its errors
point the same way as the good model's, only further, so the extrapolation removes some of the error (here: the
missing fine texture of an undertrained model) without pulling every sample to its condition's mode as
classifier-free guidance does (which made these samples smoother: bench_flow_guidance.py).

The demo's real cohort (the default spec's phantom at 32 px, split as the release splits it); the compact `flow`
network trained for `--epochs` with the demo's seed (the good model) and a bad model (half the epochs, or a
narrower network with `--bad narrow`); `--synthetic` patients from the good model's mask generator, sampled at
each guidance weight (1: the good model alone). Each is scored by `discriminator_auc` of
bench_generator_realism.py (0.5: indistinguishable from the real holdout). One JSON line per row.
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


def autoguided(good: FlowMatching, bad: FlowMatching, weight: float):
    """A `_velocity` for `good` that extrapolates away from `bad` (both trained on the same vendors)."""

    def make(cond, vendor):
        prepared_good, prepared_bad = good.net.prepare(cond), bad.net.prepare(cond)

        def velocity(x, t):
            v_good = good.net(x, prepared_good, vendor, t)
            if weight == 1.0:
                return v_good
            v_bad = bad.net(x, prepared_bad, vendor, t)
            return v_bad + weight * (v_good - v_bad)

        return velocity

    return make


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", type=int, default=30)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--weights", default="1,1.5,2,3")
    ap.add_argument("--bad", choices=("short", "narrow"), default="short")
    args = ap.parse_args()
    from cmri_release.preprocess import PreprocessConfig
    from cmri_release.release import load_data
    from cmri_release.spec import default_spec
    from generators.synthesis import synthesize

    spec = default_spec(Path.cwd())
    data = load_data(spec, PreprocessConfig(size=spec.data.size), quiet=True)
    good = FlowMatching(network="compact")
    start = time.perf_counter()
    good.fit(data.train, None, epochs=args.epochs, device="cpu", seed=spec.seed, quiet=True)
    good_s = time.perf_counter() - start
    if args.bad == "short":
        bad = FlowMatching(network="compact")
        bad_epochs = args.epochs / 2
    else:
        bad = FlowMatching(network="compact", channels=[8, 16, 32, 32])
        bad_epochs = args.epochs
    start = time.perf_counter()
    bad.fit(data.train, None, epochs=bad_epochs, device="cpu", seed=spec.seed + 1, quiet=True)
    bad_s = time.perf_counter() - start
    assert bad.vendors == good.vendors, "both models must code the vendors alike"
    for weight in (float(w) for w in args.weights.split(",")):
        good._velocity = autoguided(good, bad, weight)
        start = time.perf_counter()
        syn = synthesize(good, args.synthetic, seed=spec.seed)
        synth_s = time.perf_counter() - start
        scored = discriminator_auc(data.train, data.holdout, syn)
        print(json.dumps({"bad": args.bad, "weight": weight, "epochs": args.epochs, "bad_epochs": bad_epochs,
                          "good_train_s": round(good_s, 1), "bad_train_s": round(bad_s, 1),
                          "synth_s": round(synth_s, 1), **scored}), flush=True)


if __name__ == "__main__":
    main()
