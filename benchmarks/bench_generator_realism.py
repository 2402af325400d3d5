"""How much training the default generator needs before the gate's discriminator stops telling its slices apart.

    python benchmarks/bench_generator_realism.py OUT.json [--epochs 2,4,8,16] [--synthetic 30] [--quick]
        [--generator flow|ddpm|vae|gan]

The demo's real cohort (the default spec's phantom, 100 train / 99 holdout patients at 32 px, split as the release
splits it) is built once; the default `flow` generator (compact network, Heun 8) is trained for each budget in
epochs with the demo's seed (or another registered generator with `--generator`), synthesises `--synthetic` patients from its mask generator, and the audit's own
discriminator (`auditors.fidelity.discriminator`: texture features standardised per vendor, gradient-boosted
trees, 5 folds by patient) scores them against the real holdout. Beside each budget: its training seconds, and
the same AUC after the noise top-up (white noise per vendor restoring the training slices' residual variance in
the blood pool, the largest single-feature gap). The baseline row is real test patients against the holdout.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditors.base import AuditContext  # noqa: E402
from auditors.features.texture import get_texture_space, region_masks, texture_features  # noqa: E402
from auditors.fidelity.discriminator import discriminate, vendor_standardise  # noqa: E402


def discriminator_auc(train, holdout, synthetic, seed: int = 0) -> dict:
    """The audit's discriminator AUC (`discriminate`, 5 folds by patient) and the single features that separate most."""
    ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=seed, quiet=True)
    auc = discriminate(ctx, folds=5, replicates=50)["auc"]
    names = get_texture_space(ctx).names
    ref_rows = train.has_label
    z = {}
    for split in ("holdout", "synthetic"):
        s = getattr(ctx, split)
        z[split] = vendor_standardise(texture_features(ctx, split)[s.has_label], s.vendors[s.has_label],
                                      texture_features(ctx, "train")[ref_rows], train.vendors[ref_rows])
    x = np.concatenate([z["holdout"], z["synthetic"]])
    y = np.r_[np.zeros(len(z["holdout"]), int), np.ones(len(z["synthetic"]), int)]
    single = []
    for j, name in enumerate(names):
        ok = np.isfinite(x[:, j])
        if len(np.unique(y[ok])) == 2:
            a = float(roc_auc_score(y[ok], x[ok, j]))
            single.append({"feature": name, "auc": round(a, 3), "synthetic_z": round(float(np.nanmean(x[y == 1, j])), 2)})
    single.sort(key=lambda r: -abs(r["auc"] - 0.5))
    return {"auc": round(float(auc), 4), "top_features": single[:5]}


def _blood_residual_var(slices, vendor: str) -> float:
    keep = (slices.vendors == vendor) & slices.has_label
    images = slices.images[keep].astype(np.float64)
    residual = images - ndimage.gaussian_filter(images, (0, 1, 1), mode="nearest")
    return float((residual[region_masks(slices.labels[keep])["blood"]] ** 2).mean())


def noise_top_up(train, synthetic, seed: int = 1):
    """White noise per vendor that restores the training slices' fine-residual variance in the blood pool."""
    white = np.random.default_rng(0).standard_normal((200, synthetic.size, synthetic.size))
    kept = float(((white - ndimage.gaussian_filter(white, (0, 1, 1), mode="nearest")) ** 2).mean())
    rng = np.random.default_rng(seed)
    images = synthetic.images.astype(np.float64).copy()
    for vendor in np.unique(synthetic.vendors):
        missing = max(_blood_residual_var(train, vendor) - _blood_residual_var(synthetic, vendor), 0.0) / kept
        sel = synthetic.vendors == vendor
        images[sel] += rng.standard_normal(images[sel].shape) * np.sqrt(missing)
    out = copy.copy(synthetic)
    out.images = np.clip(images, 0, 1).astype(synthetic.images.dtype)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--epochs", default="2,4,8,16")
    ap.add_argument("--synthetic", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="40 phantom patients, 1 epoch, 6 synthetic")
    ap.add_argument("--generator", default="flow", help="a registered generator, compact network (default: flow)")
    args = ap.parse_args()
    from dataclasses import replace

    from cmri_release.preprocess import PreprocessConfig
    from cmri_release.release import load_data
    from cmri_release.spec import default_spec
    from generators import create_generator
    from generators.synthesis import synthesize

    spec = default_spec(Path.cwd())
    epochs = [int(e) for e in args.epochs.split(",")]
    n_syn = args.synthetic
    if args.quick:
        spec = replace(spec, data=replace(spec.data, phantom=replace(spec.data.phantom, subjects=40)))
        epochs, n_syn = [1], 6
    data = load_data(spec, PreprocessConfig(size=spec.data.size), quiet=True)
    rows = [{"case": "real test patients (baseline)", **discriminator_auc(data.train, data.holdout, data.test)}]
    print(json.dumps(rows[-1]), flush=True)
    for e in epochs:
        gen = create_generator(args.generator, network="compact")
        start = time.perf_counter()
        gen.fit(data.train, None, epochs=e, device="cpu", seed=spec.seed, quiet=True)
        train_s = time.perf_counter() - start
        syn = synthesize(gen, n_syn, seed=spec.seed)
        rows.append({"case": f"{args.generator}, {e} epochs", "epochs": e, "train_s": round(train_s, 1),
                     **discriminator_auc(data.train, data.holdout, syn),
                     "auc_with_noise_top_up": discriminator_auc(data.train, data.holdout,
                                                                noise_top_up(data.train, syn))["auc"]})
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({"cohort": data.counts, "synthetic_patients": n_syn, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
