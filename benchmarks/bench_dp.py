"""DP-SGD step time and peak memory over a plain step, for the default generator (flow, compact U-Net); and, with
--quality, what DP costs in image quality on the phantom.

    python benchmarks/bench_dp.py OUT.json [--sizes 64,128] [--batch 16] [--steps 3] [--modes plain,hooks,...]
    python benchmarks/bench_dp.py OUT.json --interleaved [--sizes 32,64] [--steps 9]
    python benchmarks/bench_dp.py OUT_DIR --quality [--size 32] [--train-steps 240] [--epsilons 10,3,1]

Modes: `plain` (no DP), Opacus' per-sample gradient engines `hooks`, `functorch`, `ew` (ExpandedWeights) and
`ghost` (ghost clipping: norms only, a second backward pass), and `ours` (generators.dp.PrivateTraining: hooks plus
the patient grouping, as `cmri-release train --dp` runs it). Every (size, mode) runs in a fresh process, so that its
peak resident memory (ru_maxrss) is its own; "step MB" is the peak minus the peak before the first step. Batches are
of fixed size (Poisson sampling off) so that every step does the same work; data are random (time does not depend on
content). Steps are timed after two warm-up steps (oneDNN builds kernels on the first calls); the median is kept.
The machine load is recorded, since shared CPUs make timings noisy.

--interleaved times, in one process and alternating step by step so that the machine's load hits all alike: the
plain step, `ours` (PrivateTraining) and `ours` with the project's speed-ups undone (Opacus' own Conv2d sampler,
autograd's summed weight gradients, Opacus' scale_grad), i.e. what the DP step cost before them.

Quality: flow models trained on the same phantom patients without DP and at each epsilon (the same number of
optimiser steps, so the difference is the privacy, not the compute), then asked for images of held-out phantom
patients' label maps. Reported: mask consistency (the fidelity auditor: Dice of a segmenter trained on the real
training slices, synthetic vs its conditioning mask over real holdout vs expert), the mean absolute error of the
per-structure mean intensity against the real slice with the same mask, the same error for the mask generator's
structure areas, the ledger's epsilon, and a sample grid (rows: real, no DP, each epsilon) as PNG.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("plain", "hooks", "functorch", "ew", "ghost", "ours")
N_VENDORS = 3


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _build(size: int, batch: int):
    """The compact flow U-Net and one batch: label maps channels-last, as training.one_hot_tensor builds them."""
    import numpy as np
    import torch

    from generators.flow import FlowMatching
    from generators.training import Batch

    torch.manual_seed(0)
    gen = FlowMatching(network="compact")
    gen.vendors = [f"v{i}" for i in range(N_VENDORS)]
    gen._build(N_VENDORS)
    gen.net.train()
    rng = np.random.default_rng(0)
    labels = torch.as_tensor(rng.integers(0, 4, (batch, size, size)))
    batch_data = Batch(x=torch.rand(batch, 1, size, size) * 2 - 1,
                       cond=torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float(),
                       vendor=torch.as_tensor(rng.integers(0, N_VENDORS, batch)))
    return gen, batch_data


def worker(size: int, mode: str, batch: int, steps: int) -> dict:
    import numpy as np
    import torch
    from torch import nn

    warnings.simplefilter("ignore")
    gen, b = _build(size, batch)
    net = gen.net
    params = sum(p.numel() for p in net.parameters())
    noise_gen = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(batch * 8)), batch_size=batch)

    def flow_output(batch_, g):
        x1 = batch_.x
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.sigmoid(torch.randn(len(x1), generator=g))
        tt = t[:, None, None, None]
        return net((1 - tt) * x0 + tt * x1, batch_.cond, batch_.vendor, t), x1 - x0

    if mode == "ours":
        from generators.base import DPConfig
        from generators.dp import PrivateTraining, open_account
        from generators.training import Objective, SliceTensors, TrainSettings
        n = batch * 8
        data = SliceTensors(x=b.x.repeat(8, 1, 1, 1), cond=b.cond.repeat(8, 1, 1, 1), vendor=b.vendor.repeat(8),
                            patient=np.arange(n))
        objective = Objective("flow", [net], gen._loss, lr=1e-3)
        session = PrivateTraining([objective], data, TrainSettings(batch_size=batch),
                                  open_account(DPConfig(epsilon=10.0), n), epochs=1, seed=0)
        optimizer = session.optimizers[0]

        def step():
            optimizer.zero_grad(set_to_none=True)
            session.private_step(objective, optimizer, b, noise_gen)
    elif mode == "plain":
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step():
            optimizer.zero_grad(set_to_none=True)
            out, target = flow_output(b, noise_gen)
            nn.functional.mse_loss(out, target).backward()
            optimizer.step()
    else:
        from opacus import PrivacyEngine
        engine = PrivacyEngine(accountant="rdp")
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        common = dict(optimizer=optimizer, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
                      poisson_sampling=False, grad_sample_mode=mode)
        if mode == "ghost":
            class PerSample(nn.Module):
                reduction = "mean"

                def forward(self, out, target):
                    per = (out - target).pow(2).flatten(1).mean(1)
                    return per if self.reduction == "none" else per.mean()

            _, optimizer, criterion, _ = engine.make_private(module=net, criterion=PerSample(), wrap_model=False,
                                                             **common)

            def step():
                optimizer.zero_grad(set_to_none=True)
                out, target = flow_output(b, noise_gen)
                criterion(out, target).backward()
                optimizer.step()
        else:
            if mode == "ew":
                wrapped, optimizer, _ = engine.make_private(module=net, **common)
                call = wrapped
            else:
                _, optimizer, _ = engine.make_private(module=net, wrap_model=False, **common)
                call = net

            def step():
                optimizer.zero_grad(set_to_none=True)
                x1 = b.x
                x0 = torch.randn(x1.shape, generator=noise_gen)
                t = torch.sigmoid(torch.randn(len(x1), generator=noise_gen))
                tt = t[:, None, None, None]
                out = call((1 - tt) * x0 + tt * x1, b.cond, b.vendor, t)
                nn.functional.mse_loss(out, x1 - x0).backward()
                optimizer.step()

    rss_setup = _rss_mb()
    times = []
    try:
        for i in range(2 + steps):
            start = time.perf_counter()
            step()
            if i >= 2:
                times.append(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - a mode this network cannot use is a result, not a crash
        return {"size": size, "mode": mode, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    return {"size": size, "mode": mode, "batch": batch, "parameters": params, "s_per_step": statistics.median(times),
            "times": [round(t, 3) for t in times], "peak_rss_mb": round(_rss_mb(), 1),
            "step_mb": round(_rss_mb() - rss_setup, 1), "threads": torch.get_num_threads()}


def interleaved(size: int, batch: int, steps: int) -> dict:
    """Plain step, DP step as `train --dp` runs it, and the DP step with Opacus' defaults, alternating."""
    import numpy as np
    import torch

    from generators.base import DPConfig
    from generators.dp import PrivateTraining, open_account
    from generators.training import Objective, SliceTensors, TrainSettings

    warnings.simplefilter("ignore")
    gen, b = _build(size, batch)
    plain_gen, _ = _build(size, batch)  # the same initial weights, no hooks
    n = batch * 8
    data = SliceTensors(x=b.x.repeat(8, 1, 1, 1), cond=b.cond.repeat(8, 1, 1, 1), vendor=b.vendor.repeat(8),
                        patient=np.arange(n))
    objective = Objective("flow", [gen.net], gen._loss, lr=1e-3)
    session = PrivateTraining([objective], data, TrainSettings(batch_size=batch),
                              open_account(DPConfig(epsilon=10.0), n), epochs=1, seed=0)
    dp_optimizer = session.optimizers[0]
    plain_optimizer = torch.optim.Adam(plain_gen.net.parameters(), lr=1e-3)
    ours = {"samplers": session.hooks.GRAD_SAMPLERS, "skip": session.skip, "scale": dp_optimizer.scale_grad}
    plain_noise, dp_noise = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)

    def plain():
        plain_optimizer.zero_grad(set_to_none=True)
        plain_gen._loss(b, plain_noise).backward()
        plain_optimizer.step()

    def dp(speedups: bool):
        if speedups:
            session.hooks.GRAD_SAMPLERS, session.skip = ours["samplers"], ours["skip"]
            dp_optimizer.scale_grad = ours["scale"]
        else:
            vars(session.hooks).pop("GRAD_SAMPLERS", None)  # Opacus' class-wide registry
            session.skip = None  # the layers' own forwards: autograd computes the summed gradients
            vars(dp_optimizer).pop("scale_grad", None)  # DPOptimizer.scale_grad
        dp_optimizer.zero_grad(set_to_none=True)
        session.private_step(objective, dp_optimizer, b, dp_noise)

    runs = {"plain": plain, "ours": lambda: dp(True), "opacus defaults": lambda: dp(False)}
    times = {name: [] for name in runs}
    for i in range(2 + steps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    mean = {name: statistics.fmean(t) for name, t in times.items()}
    session.close()
    # The median leaves out the steps that Python's garbage collector interrupts; the mean counts them.
    return {"size": size, "batch": batch, "threads": torch.get_num_threads(), "steps": steps,
            "s_per_step": {k: round(v, 4) for k, v in median.items()},
            "x_plain": {k: round(v / median["plain"], 2) for k, v in median.items()},
            "mean_s_per_step": {k: round(v, 4) for k, v in mean.items()},
            "mean_x_plain": {k: round(v / mean["plain"], 2) for k, v in mean.items()},
            "load": [round(v, 2) for v in os.getloadavg()]}


def quality(out: Path, size: int, train_steps: int, epsilons: list[float], n_train: int, n_holdout: int,
            batch: int, seed: int) -> dict:
    import numpy as np

    from auditors.base import AuditContext
    from auditors.fidelity import plots
    from auditors.fidelity.mask_consistency import MaskConsistencyAuditor
    from cmri_release.phantom import make_phantom
    from cmri_release.preprocess import PreprocessConfig, cohort_to_slices
    from generators import DPConfig, create_generator

    warnings.simplefilter("ignore")
    config = PreprocessConfig(size=size)
    train = cohort_to_slices(make_phantom(n_train, seed=seed + 1), config).labelled()
    holdout = cohort_to_slices(make_phantom(n_holdout, seed=seed + 2, id_prefix="ho"), config).labelled()
    n_patients = len(train.subjects)
    steps_per_epoch_dp = int(np.ceil(n_patients / batch))
    shared_cache: dict = {}
    rng = np.random.default_rng(seed)
    mid = np.flatnonzero(np.abs(holdout.slice_pos - 0.5) <= 0.2)  # mid-ventricular slices show all structures
    grid_idx = np.sort(rng.choice(mid, size=min(8, len(mid)), replace=False))
    rows_img, rows_lab = {"real (phantom)": holdout.images[grid_idx]}, {"real (phantom)": holdout.labels[grid_idx]}
    results = []

    def structure_error(images):
        errs = []
        for k in range(4):
            per_slice = [abs(images[i][holdout.labels[i] == k].mean() - holdout.images[i][holdout.labels[i] == k].mean())
                         for i in range(len(holdout)) if (holdout.labels[i] == k).any()]
            errs.append(float(np.mean(per_slice)))
        return dict(zip(("background", "RV", "MYO", "LV"), errs))

    def area_error(gen):
        stacks = gen.mask_model.sample(n_holdout * 4, seed=seed)
        synth = np.concatenate([np.concatenate([s.labels["ED"], s.labels["ES"]]) for s in stacks])
        px = holdout.spacing_mm ** 2
        out_ = {}
        for k, name in ((1, "RV"), (2, "MYO"), (3, "LV")):
            real_area = (holdout.labels == k).sum(axis=(1, 2)).mean() * px
            syn_area = (synth == k).sum(axis=(1, 2)).mean() * px
            out_[name] = round(float(syn_area / real_area - 1.0), 3)
        return out_

    for eps in [None] + epsilons:
        gen = create_generator("flow", network="compact", batch_size=batch if eps else 16)
        start = time.perf_counter()
        if eps is None:  # the same optimiser steps as the DP runs, over slices
            epochs = max(1, round(train_steps * 16 / len(train)))
            log = gen.fit(train, epochs=epochs, seed=seed, quiet=True)
        elif eps == float("inf"):
            # Diagnostic, not a DP model: the DP path (patients sampled, clipped once) with zero noise, to tell the
            # cost of the noise from that of clipping and patient sampling.
            from unittest import mock

            import generators.dp.engine as dp_engine
            with mock.patch.object(dp_engine, "calibrate_noise", lambda **kw: (0.0, "none")), \
                    mock.patch.object(dp_engine, "build_ledger", lambda **kw: {"dp": False, "note": "clip only"}):
                log = gen.fit(train, DPConfig(epsilon=10.0), epochs=max(1, round(train_steps / steps_per_epoch_dp)),
                              seed=seed, quiet=True)
        else:
            log = gen.fit(train, DPConfig(epsilon=eps), epochs=max(1, round(train_steps / steps_per_epoch_dp)),
                          seed=seed, quiet=True)
        seconds = time.perf_counter() - start
        images = gen.sample(holdout.labels, holdout.vendors, seed=seed)
        synthetic = dataclasses.replace(holdout, images=images.astype(np.float32))
        ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=seed, quiet=True,
                           cache=shared_cache)
        mc = MaskConsistencyAuditor().run(ctx)
        name = "no DP" if eps is None else "clip only, no noise" if eps == float("inf") else f"epsilon {eps:g}"
        ledger = gen.model_card["privacy"]
        row = {"setting": name, "target_epsilon": eps, "epsilon": ledger.get("epsilon"),
               "epsilon_prv": ledger.get("epsilon_prv"), "noise_multiplier": ledger.get("noise_multiplier"),
               "steps": log["steps"], "train_seconds": round(seconds, 1),
               "mask_dice_ratio": round(float(mc.metrics["dice_ratio"]), 3),
               "synthetic_dice": round(float(mc.metrics["synthetic"]["dice"]["mean"]), 3),
               "real_holdout_dice": round(float(mc.metrics["real_holdout"]["dice"]["mean"]), 3),
               "intensity_abs_error": {k: round(v, 4) for k, v in structure_error(images).items()},
               "mask_generator_area_rel_error": area_error(gen)}
        results.append(row)
        print(json.dumps(row), flush=True)
        rows_img[name], rows_lab[name] = images[grid_idx], holdout.labels[grid_idx]
    out.mkdir(parents=True, exist_ok=True)
    png = plots.sample_grid(rows_img, rows_lab, f"Flow on the phantom ({n_patients} training patients, {size} px): "
                                                f"the same held-out masks without DP and at each epsilon")
    (out / "dp_sample_grid.png").write_bytes(png)
    report = {"size": size, "train_patients": n_patients, "train_slices": len(train), "holdout_slices": len(holdout),
              "dp_batch_patients": batch, "train_steps": train_steps, "results": results,
              "load": [round(v, 2) for v in os.getloadavg()]}
    (out / "dp_quality.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--quality", action="store_true", help="the quality experiment; OUT is a folder")
    parser.add_argument("--interleaved", action="store_true",
                        help="plain, ours and Opacus' defaults alternating in one process")
    parser.add_argument("--size", type=int, default=32, help="quality: slice size")
    parser.add_argument("--train-steps", type=int, default=240, help="quality: optimiser steps per model")
    parser.add_argument("--epsilons", default="inf,10,3,1",
                        help="quality: target epsilons (inf: the DP path with zero noise, a diagnostic)")
    parser.add_argument("--train-patients", type=int, default=48)
    parser.add_argument("--holdout-patients", type=int, default=12)
    args = parser.parse_args()
    if args.quality:
        quality(args.out, args.size, args.train_steps, [float(e) for e in args.epsilons.split(",")],
                args.train_patients, args.holdout_patients, batch=8, seed=0)
        return
    if args.interleaved:
        rows = []
        for size in [int(s) for s in args.sizes.split(",")]:
            rows.append(interleaved(size, args.batch, args.steps))
            print(json.dumps(rows[-1]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"generator": "flow", "network": "compact", "interleaved": rows}, indent=1)
                            + "\n")
        return
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1], args.batch, args.steps)))
        return
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for mode in args.modes.split(","):
            load = [round(v, 2) for v in os.getloadavg()]
            proc = subprocess.run([sys.executable, __file__, str(args.out), "--worker", str(size), mode,
                                   "--batch", str(args.batch), "--steps", str(args.steps)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                row = {"size": size, "mode": mode, "error": proc.stderr.strip().splitlines()[-1][:200]}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["load_before"] = load
            results.append(row)
            print(json.dumps(row), flush=True)
    for row in results:
        plain = next((r for r in results if r["size"] == row["size"] and r["mode"] == "plain" and "error" not in r),
                     None)
        if plain and "error" not in row:
            row["slowdown"] = round(row["s_per_step"] / plain["s_per_step"], 2)
            row["memory_ratio"] = round(row["peak_rss_mb"] / plain["peak_rss_mb"], 2)
    import torch
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
              "generator": "flow", "network": "compact", "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'px':>4} {'mode':>10} {'s/step':>8} {'x plain':>8} {'peak MB':>8} {'step MB':>8}")
    for r in results:
        if "error" in r:
            print(f"{r['size']:>4} {r['mode']:>10}  failed: {r['error']}")
        else:
            print(f"{r['size']:>4} {r['mode']:>10} {r['s_per_step']:8.3f} {r.get('slowdown', 1.0):8.2f} "
                  f"{r['peak_rss_mb']:8.0f} {r['step_mb']:8.0f}")


if __name__ == "__main__":
    main()
