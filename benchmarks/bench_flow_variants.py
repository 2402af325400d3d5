"""Can the demo's training minutes buy a more realistic `flow` generator? Variants at equal epochs, one run.

    python benchmarks/bench_flow_variants.py OUT.json [--epochs 2] [--synthetic 30] [--quick]

The demo's real cohort (the default spec's phantom at 32 px, split as the release splits it) is built once; each
variant trains the compact `flow` network for the same epochs with the demo's seed, synthesises `--synthetic`
patients from its mask generator, and is scored by the audit's own discriminator (`discriminator_auc` of
bench_generator_realism.py). Variants:

- `default`: the shipped settings (lr 1e-3, batch 16, EMA 0.995);
- `lr3e-3, batch 8`: more, larger optimiser steps in the same passes;
- `lr3e-3, EMA 0.98`: a shorter EMA horizon, for a run of ~250 steps;
- `informed prior + lr3e-3, batch 8, EMA 0.98`: the flow starts from a data-dependent Gaussian instead of N(0, I)
  (PriorGrad, Lee et al. ICLR 2022): per vendor, a per-pixel mean and spread of each label's training intensities
  (shrunk to the label's mean where few slices cover a pixel), read through the label map being synthesised, so
  the network only transports from "the right intensities per structure" to an image. Kept here, not in the
  generator: it is a statistic of the training patients that DP training would have to privatise too;
- `preconditioned` (alone and with the fast settings): EDM-style input, skip and output scales worked out for the
  rectified path (`PreconditionedFlow`). Measured no gain (benchmarks/README.md), so not in the generator.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generator_realism import discriminator_auc  # noqa: E402
from generators.flow import FlowMatching  # noqa: E402
from generators.training import Batch, images_to_model  # noqa: E402

PRIOR_SHRINK = 20.0  # a pixel's statistics count the label's own as this many extra slices


def informed_prior(images: np.ndarray, labels: np.ndarray, vendors: np.ndarray, vendor_order: list[str],
                   n_labels: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(V + 1, L, H, W) mean and spread in model units per vendor (last row: all vendors) and label."""
    x = images_to_model(images)[:, 0].numpy().astype(np.float64)
    h, w = x.shape[1:]
    mean = np.zeros((len(vendor_order) + 1, n_labels, h, w))
    spread = np.ones_like(mean)
    for vi, vendor in enumerate(list(vendor_order) + [None]):
        sel = np.ones(len(x), bool) if vendor is None else vendors == vendor
        xv, lv = x[sel], labels[sel]
        for label in range(n_labels):
            m = lv == label
            if not m.any():
                continue
            g_mean, g_var = xv[m].mean(), xv[m].var()
            count = m.sum(axis=0)
            mu = ((xv * m).sum(axis=0) + PRIOR_SHRINK * g_mean) / (count + PRIOR_SHRINK)
            second = ((xv ** 2 * m).sum(axis=0) + PRIOR_SHRINK * (g_var + g_mean ** 2)) / (count + PRIOR_SHRINK)
            mean[vi, label], spread[vi, label] = mu, np.sqrt(np.maximum(second - mu ** 2, 1e-4))
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(spread, dtype=torch.float32)


class InformedPriorFlow(FlowMatching):
    """`flow` with x_0 ~ N(mu(labels, vendor), diag sigma^2(labels, vendor)) instead of N(0, I)."""

    def fit(self, train, privacy=None, **kwargs):
        vendors = sorted(set(train.vendors.tolist()))
        self._prior_mean, self._prior_spread = informed_prior(train.images, train.labels, train.vendors, vendors)
        return super().fit(train, privacy, **kwargs)

    def _source(self, cond, vendor, noise):
        v = vendor.clamp(max=len(self._prior_mean) - 1)
        mean = (cond * self._prior_mean.to(cond.device)[v]).sum(1, keepdim=True)
        spread = (cond * self._prior_spread.to(cond.device)[v]).sum(1, keepdim=True)
        return mean + spread * noise

    def _loss(self, batch, gen):
        x1 = batch.x
        x0 = self._source(batch.cond, batch.vendor, torch.randn(x1.shape, generator=gen, device=x1.device))
        t = self._times(len(x1), gen, x1.device)
        tt = t[:, None, None, None]
        return F.mse_loss(self.net((1 - tt) * x0 + tt * x1, batch.cond, batch.vendor, t), x1 - x0)

    def _sample_batch(self, noise, cond, vendor):
        return super()._sample_batch(self._source(cond, vendor, noise), cond, vendor)


class PreconditionedFlow(FlowMatching):
    """`flow` with EDM-style preconditioning (Karras et al. NeurIPS 2022, sec. 5) worked out for the rectified path.

    With x_t = (1 - t) x_0 + t x_1 and pixels of mean mu and spread s, the best velocity that is linear in x_t is
    mu + a(t) (x_t - t mu), a = (t s^2 - (1 - t)) / D, D = (1 - t)^2 + t^2 s^2, and what it leaves has spread s /
    sqrt(D). The network only learns that remainder, at unit scale, from an input at unit scale:
    v = mu + a (x_t - t mu) + (s / sqrt D) F((x_t - t mu) / sqrt D). Untrained (F = 0) it already transports noise
    to pixels of the data's mean and spread, fine grain included, instead of to a blur.
    """

    def fit(self, train, privacy=None, **kwargs):
        x = images_to_model(train.images)
        self._mu, self._s = float(x.mean()), float(x.std())
        return super().fit(train, privacy, **kwargs)

    def _coefficients(self, t):
        tt = t[:, None, None, None]
        d = (1 - tt) ** 2 + tt ** 2 * self._s ** 2
        return tt, (tt * self._s ** 2 - (1 - tt)) / d, self._s / d.sqrt(), d.sqrt()

    def _precond(self, x, cond, vendor, t):
        tt, a, c_out, root = self._coefficients(t)
        centred = x - tt * self._mu
        return self._mu + a * centred, c_out, self.net(centred / root, cond, vendor, t)

    def _loss(self, batch, gen):
        x1 = batch.x
        x0 = torch.randn(x1.shape, generator=gen, device=x1.device)
        t = self._times(len(x1), gen, x1.device)
        tt = t[:, None, None, None]
        skip, c_out, out = self._precond((1 - tt) * x0 + tt * x1, batch.cond, batch.vendor, t)
        return F.mse_loss(out, (x1 - x0 - skip) / c_out)  # unit weight on the network's own target, as in EDM

    def _velocity(self, cond, vendor):
        prepared = self.net.prepare(cond)

        def velocity(x, t):
            t = t.expand(len(x)) if torch.is_tensor(t) else torch.full((len(x),), float(t), device=x.device)
            skip, c_out, out = self._precond(x, prepared, vendor, t)
            return skip + c_out * out

        return velocity


def _haar_split(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One level of the orthonormal 2-D Haar transform: (approximation, horizontal, vertical, diagonal)."""
    x00, x01, x10, x11 = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return ((x00 + x01 + x10 + x11) / 2, (x00 - x01 + x10 - x11) / 2, (x00 + x01 - x10 - x11) / 2,
            (x00 - x01 - x10 + x11) / 2)


def _haar_merge(a, h, v, d) -> torch.Tensor:
    out = a.new_empty(a.shape[:-2] + (2 * a.shape[-2], 2 * a.shape[-1]))
    out[..., 0::2, 0::2], out[..., 0::2, 1::2] = (a + h + v + d) / 2, (a - h + v - d) / 2
    out[..., 1::2, 0::2], out[..., 1::2, 1::2] = (a + h - v - d) / 2, (a - h - v + d) / 2
    return out


def haar_bands(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[details of level 1 (3 bands stacked), ..., of level `levels`, approximation]."""
    out = []
    for _ in range(levels):
        x, h, v, d = _haar_split(x)
        out.append(torch.stack([h, v, d]))
    return out + [x]


def rescale_bands(x: torch.Tensor, factors: list[torch.Tensor]) -> torch.Tensor:
    """x with each Haar band multiplied by its factor (factors as `haar_bands` orders the bands: a (3,) tensor per
    level, a scalar for the approximation): an exactly invertible linear filter, image to image."""
    bands = haar_bands(x, len(factors) - 1)
    y = bands[-1] * factors[-1]
    for detail, f in zip(reversed(bands[:-1]), reversed(factors[:-1])):
        h, v, d = (detail[i] * f[i] for i in range(3))
        y = _haar_merge(y, h, v, d)
    return y


class WhitenedFlow(FlowMatching):
    """`flow` on Haar-whitened images (Guth et al. 2022, "Wavelet score-based generative modelling": whitened wavelet
    coefficients make the score far better conditioned). In pixel space the flow loss is dominated by the coarse
    bands, so a short run learns the fine grain last: the slices come out too smooth (the discriminator's cues). Each
    band of a `LEVELS`-level orthonormal Haar transform is scaled by (its training spread)^-gamma, normalised to keep
    the total variance; the flow learns the filtered images, and samples are filtered back exactly. The band spreads
    are 3 `LEVELS` + 1 numbers of the training set (DP training would have to privatise them: public values or a
    noisy count would do)."""
    LEVELS = 3
    gamma = 1.0

    def fit(self, train, privacy=None, **kwargs):
        bands = haar_bands(images_to_model(train.images), self.LEVELS)
        spread = [b.flatten(1).std(dim=1) for b in bands[:-1]] + [bands[-1].std()]
        weight = [torch.tensor(3.0 * 4.0 ** -(i + 1)) for i in range(self.LEVELS)] + [torch.tensor(4.0 ** -self.LEVELS)]
        raw = [s ** -self.gamma for s in spread]
        # the filtered images keep the data's total variance (each band weighted by its share of the coefficients)
        total = sum(w * (s ** 2).mean() for w, s in zip(weight, spread))
        after = sum(w * ((r * s) ** 2).mean() for w, r, s in zip(weight, raw, spread))
        self._factors = [r * (total / after).sqrt() for r in raw]
        self._inverse = [1.0 / f for f in self._factors]
        return super().fit(train, privacy, **kwargs)

    def _loss(self, batch, gen):
        return super()._loss(Batch(rescale_bands(batch.x, self._factors), batch.cond, batch.vendor), gen)

    def _sample_batch(self, noise, cond, vendor):
        return rescale_bands(super()._sample_batch(noise, cond, vendor), self._inverse)


class HalfWhitenedFlow(WhitenedFlow):
    gamma = 0.5


FAST = {"lr": 3e-3, "batch_size": 8, "ema_decay": 0.98}
VARIANTS = {
    "default": (FlowMatching, {}),
    "lr3e-3, batch 8": (FlowMatching, {"lr": 3e-3, "batch_size": 8}),
    "lr3e-3, EMA 0.98": (FlowMatching, {"lr": 3e-3, "ema_decay": 0.98}),
    "informed prior + lr3e-3, batch 8, EMA 0.98": (InformedPriorFlow, FAST),
    "preconditioned": (PreconditionedFlow, {}),
    "preconditioned + lr3e-3, batch 8, EMA 0.98": (PreconditionedFlow, FAST),
    "Haar-whitened": (WhitenedFlow, {}),
    "Haar half-whitened": (HalfWhitenedFlow, {}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--synthetic", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="40 phantom patients, 1 epoch, 6 synthetic")
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = ap.parse_args()
    from dataclasses import replace

    from cmri_release.preprocess import PreprocessConfig
    from cmri_release.release import load_data
    from cmri_release.spec import default_spec
    from generators.synthesis import synthesize

    spec = default_spec(Path.cwd())
    epochs, n_syn = args.epochs, args.synthetic
    if args.quick:
        spec = replace(spec, data=replace(spec.data, phantom=replace(spec.data.phantom, subjects=40)))
        epochs, n_syn = 1, 6
    data = load_data(spec, PreprocessConfig(size=spec.data.size), quiet=True)
    rows = []
    for name, (cls, settings) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        gen = cls(network="compact", **settings)
        start = time.perf_counter()
        gen.fit(data.train, None, epochs=epochs, device="cpu", seed=spec.seed, quiet=True)
        train_s = time.perf_counter() - start
        syn = synthesize(gen, n_syn, seed=spec.seed)
        rows.append({"variant": name, "settings": settings, "epochs": epochs, "train_s": round(train_s, 1),
                     **discriminator_auc(data.train, data.holdout, syn)})
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({"cohort": data.counts, "synthetic_patients": n_syn, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
