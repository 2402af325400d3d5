"""The utility experiments with a standard U-Net a user recognises: MONAI's `monai.networks.nets.UNet` (its
tutorials' 2D configuration: channels 16-32-64-128-256, strides 2, two residual units, batch norm) trained with
MONAI's `DiceCELoss`, at 64 px, on the phantom. Written as JSON.

    python benchmarks/bench_unet.py OUT.json [--size 64] [--train 60] [--test 30] [--synthetic 60] [--steps 600]
        [--batch 16] [--low-fraction 0.2] [--synthetic-dir DIR] [--quick]

Experiments (each a paired difference over the same real test patients, patient bootstrap as in the audit):
- low data: a vendor-stratified fifth of the real train patients + synthetic vs that fifth alone;
- leave one vendor out: real train without vendor V + synthetic V vs without, tested on V;
- real + synthetic vs real alone.
The synthetic cohort is fresh phantom patients (a perfect generator) unless `--synthetic-dir` names a cohort
written by `cmri-release synthesize`. monai is an optional extra (`pip install monai`): imported here only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditors.segmentation.train import augment  # noqa: E402
from auditors.utility import paired  # noqa: E402
from auditors.utility.segmentation_utility import low_data_subjects  # noqa: E402
from cmri_release.phantom import make_phantom  # noqa: E402
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices  # noqa: E402
from cmri_release.core.sliceset import SliceSet  # noqa: E402


def monai_unet(channels=(16, 32, 64, 128, 256)):
    from monai.networks.nets import UNet
    return UNet(spatial_dims=2, in_channels=1, out_channels=4, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=2, norm="batch")


def train(data: SliceSet, steps: int, batch: int, seed: int, channels) -> torch.nn.Module:
    from monai.losses import DiceCELoss
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = monai_unet(channels).train()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    images, labels = torch.from_numpy(data.images[:, None]), torch.from_numpy(data.labels.astype(np.int64))
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(data), size=batch, replace=len(data) < batch))
        x, y = augment(images[idx], labels[idx], rng, max_shift=4, intensity_jitter=True)
        loss = loss_fn(model(x), y[:, None])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.inference_mode()
def predict(model, images: np.ndarray) -> np.ndarray:
    return np.concatenate([model(torch.from_numpy(images[i:i + 64, None])).argmax(1).numpy().astype(np.uint8)
                           for i in range(0, len(images), 64)])


def experiments(real: SliceSet, synthetic: SliceSet, test: SliceSet, fraction: float, seed: int):
    """(name, training slices, tested on, treated vs baseline pairs) of every run."""
    few = real.for_subjects(low_data_subjects(real, fraction, seed))
    runs = {"real": (real, test), "real + synthetic": (SliceSet.concat([real, synthetic]), test),
            "low data": (few, test), "low data + synthetic": (SliceSet.concat([few, synthetic]), test)}
    pairs = [("real + synthetic - real", "real + synthetic", "real"),
             (f"{fraction:.0%} real + synthetic - {fraction:.0%} real", "low data + synthetic", "low data")]
    for v in real.vendor_names:
        rest, on = real.select(real.vendors != v), test.select(test.vendors == v)
        runs[f"LOVO {v}"] = (rest, on)
        runs[f"LOVO {v} + synthetic {v}"] = (SliceSet.concat([rest, synthetic.select(synthetic.vendors == v)]), on)
        pairs.append((f"LOVO {v}: + synthetic {v}", f"LOVO {v} + synthetic {v}", f"LOVO {v}"))
    return runs, pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--train", type=int, default=60)
    p.add_argument("--test", type=int, default=30)
    p.add_argument("--synthetic", type=int, default=60)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--low-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic-dir", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = p.parse_args()
    channels = (16, 32, 64, 128, 256)
    if args.quick:
        args.size, args.train, args.test, args.synthetic, args.steps, args.batch = 32, 6, 6, 6, 3, 4
        channels = (8, 16, 32)
    config = PreprocessConfig(size=args.size)
    real = cohort_to_slices(make_phantom(args.train, 0, quiet=True), config).labelled()
    test = cohort_to_slices(make_phantom(args.test, 1, quiet=True), config).labelled()
    if args.synthetic_dir is not None:
        from cmri_release.io import read_cohort
        synthetic = cohort_to_slices(read_cohort(args.synthetic_dir), config).labelled()
    else:
        synthetic = cohort_to_slices(make_phantom(args.synthetic, 100, quiet=True), config).labelled()
    runs, pairs = experiments(real, synthetic, test, args.low_fraction, args.seed)
    load, results, scores = os.getloadavg()[0], {}, {}
    for name, (data, on) in runs.items():
        start, cpu = time.perf_counter(), time.process_time()
        model = train(data, args.steps, args.batch, args.seed, channels)
        scores[name] = paired.patient_dice(predict(model, on.images), on)
        results[name] = {**scores[name].summary(), "train_slices": len(data),
                         "wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(time.process_time() - cpu, 1)}
        print(name, round(results[name]["dice"]["mean"], 4), results[name]["wall_s"], "s", flush=True)
    gains = {label: paired.paired_difference(scores[a].mean, scores[b].mean, seed=args.seed).to_dict()
             for label, a, b in pairs}
    out = {"setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} |
           {"network": f"monai UNet channels {channels}, strides 2, 2 residual units, batch norm",
            "parameters": sum(p.numel() for p in monai_unet(channels).parameters()),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)},
           "runs": results, "gains": gains}
    args.out.write_text(json.dumps(out, indent=1))
    for label, g in gains.items():
        print(f"{label:40s} {g['estimate']:+.4f} [{g['lower']:+.4f}, {g['upper']:+.4f}] n={g['patients']}")


if __name__ == "__main__":
    main()
