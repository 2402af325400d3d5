"""Sampling cost of `flow` and `ddpm` at equal mask consistency: slices/s and network evaluations per slice of each
sampler setting, beside the mask-consistency ratio it reaches, written as JSON.

    python benchmarks/bench_sampling_quality.py OUT.json [--quick] [--patients 24] [--epochs 5] [--size 32]

One phantom cohort, split by patient into train and holdout. Both generators are trained with the same epochs (the
same optimiser steps, the same "compact" network), so that what differs is the sampler, not the training compute.
The fidelity audit's segmenter is trained on the real train slices (`real_train_segmenter`); each sampler setting
then synthesises an image for every holdout label map and vendor (the same seed, so the same starting noise), and
its mask consistency is the auditor's `fidelity.mask_dice_ratio`: the segmenter's mean Dice on the synthetic slices
against their conditioning masks, over its mean Dice on the real holdout slices against the expert labels.

Equal quality: the target is 0.98 x the lower of the two generators' best ratios, so that both reach it; per
generator the cheapest setting reaching it (fewest network evaluations per slice, the faster measured one on a
tie) is reported, with the speed ratio flow / ddpm at that target. Only `gen.sample` is timed, after one warm-up
call per generator that samples the same slices (oneDNN builds its kernels for each batch shape on the first call).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GENERATORS = ("flow", "ddpm")
TARGET_SHARE = 0.98  # of the lower of the two best ratios: a target both generators reach
HOLDOUT_SHARE = 1 / 3
SAMPLE_SEED = 1  # one seed for every setting: each setting starts from the same noise
# (generator, solver, steps); ddpm's sampler is DDIM, one network evaluation per step
FULL_SETTINGS = ([("flow", "heun", n) for n in (2, 3, 4, 6, 8)] + [("flow", "euler", n) for n in (2, 4, 8, 16)]
                 + [("ddpm", "ddim", n) for n in (5, 10, 20, 50)])
QUICK_SETTINGS = [("flow", "heun", 2), ("flow", "heun", 4), ("flow", "euler", 4), ("ddpm", "ddim", 5),
                  ("ddpm", "ddim", 10)]


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def split_cohort(patients: int, size: int, seed: int):
    """Labelled train and holdout slices of one phantom cohort, split by patient (stratified by vendor)."""
    from cmri_release.phantom import make_phantom
    from cmri_release.preprocess import PreprocessConfig, cohort_to_slices
    from cmri_release.core.splits import split_subjects

    slices = cohort_to_slices(make_phantom(patients, seed), PreprocessConfig(size=size)).labelled()
    split = split_subjects(slices.subject_vendor(), {"train": 1 - HOLDOUT_SHARE, "holdout": HOLDOUT_SHARE}, seed)
    return slices.for_subjects(split["train"]), slices.for_subjects(split["holdout"])


def configure_sampler(gen, solver: str, steps: int) -> None:
    """Set the sampler after fitting; `flow` and `ddpm` read these settings at each `sample` call."""
    if gen.name == "flow":
        gen.config["solver"] = solver
    elif solver != "ddim":
        raise ValueError(f"{gen.name} samples with DDIM only, not {solver!r}")
    gen.config["steps"] = int(steps)


def reference_context(train, holdout, segmenter_epochs: float, seed: int):
    """An audit context holding the real splits, as the release builds it; its segmenter is trained on first use
    and shared, exactly as the fidelity auditor trains it."""
    from auditors.base import AuditContext

    return AuditContext(train=train, holdout=holdout, synthetic=holdout, seed=seed, quiet=True,
                        options={"utility_epochs": float(segmenter_epochs)})


def mask_dice_ratio(synthetic_dice: float, real_dice: float) -> float:
    from auditors.fidelity.mask_consistency import _ratio

    return _ratio(synthetic_dice, real_dice)


def measure_setting(gen, solver: str, steps: int, holdout, segmenter, real_dice: float,
                    warm_up: bool = False) -> dict:
    """Time `gen.sample` on every holdout label map and vendor, and score the images' mask consistency.

    `warm_up`: sample once untimed first (the first call of a generator: oneDNN builds its kernels for each batch
    shape then; later settings reuse the same shapes)."""
    from auditors.fidelity.mask_consistency import score_slices

    configure_sampler(gen, solver, steps)
    labels, vendors = holdout.labels, holdout.vendors
    if warm_up:
        gen.sample(labels, vendors, seed=SAMPLE_SEED)
    start = time.perf_counter()
    images = gen.sample(labels, vendors, seed=SAMPLE_SEED)
    seconds = time.perf_counter() - start
    evaluations = int(gen._evaluations_per_sample())
    synthetic = dataclasses.replace(holdout, images=images)
    dice = score_slices(segmenter, synthetic)[0]["dice"]["mean"]
    return {"generator": gen.name, "solver": solver, "steps": int(steps), "evaluations_per_slice": evaluations,
            "slices": len(holdout), "sample_seconds": round(seconds, 4),
            "slices_per_s": round(len(holdout) / seconds, 2),
            "ms_per_evaluation": round(1000 * seconds / (len(holdout) * evaluations), 3),
            "synthetic_dice": round(float(dice), 4), "mask_dice_ratio": round(mask_dice_ratio(dice, real_dice), 4)}


def cheapest_reaching(rows: list[dict], generator: str, target: float) -> dict | None:
    """The setting of `generator` with the fewest network evaluations per slice whose ratio reaches `target`
    (the faster measured one on a tie); None if none does."""
    reaching = [r for r in rows if r["generator"] == generator and r["mask_dice_ratio"] >= target]
    return min(reaching, key=lambda r: (r["evaluations_per_slice"], -r["slices_per_s"]), default=None)


def equal_quality(rows: list[dict]) -> dict:
    """The common target and, per generator, the cheapest setting reaching it; the flow / ddpm speed ratio there."""
    best = {}
    for name in GENERATORS:
        ratios = [r["mask_dice_ratio"] for r in rows if r["generator"] == name and math.isfinite(r["mask_dice_ratio"])]
        if not ratios:
            raise ValueError(f"no finite mask-consistency ratio for {name}: the comparison cannot be made")
        best[name] = max(ratios)
    target = round(TARGET_SHARE * min(best.values()), 4)
    chosen = {name: cheapest_reaching(rows, name, target) for name in GENERATORS}
    flow, ddpm = chosen["flow"], chosen["ddpm"]
    return {"target_share": TARGET_SHARE, "best_ratio": best, "target_ratio": target, "chosen": chosen,
            "speed_ratio_flow_over_ddpm": round(flow["slices_per_s"] / ddpm["slices_per_s"], 3),
            "evaluations_ratio_ddpm_over_flow": round(ddpm["evaluations_per_slice"] / flow["evaluations_per_slice"],
                                                      3)}


def run(args) -> dict:
    from auditors.fidelity.mask_consistency import score_slices
    from auditors.segmentation.train import real_train_segmenter
    from generators import create_generator

    phases = {}
    start = time.perf_counter()
    train, holdout = split_cohort(args.patients, args.size, args.seed)
    phases["data"] = time.perf_counter() - start
    report = {"data": {"patients": args.patients, "size": args.size, "train_patients": len(train.subjects),
                       "train_slices": len(train), "holdout_patients": len(holdout.subjects),
                       "holdout_slices": len(holdout)},
              "training": {}}
    gens = {}
    for name in GENERATORS:
        gen = create_generator(name, network=args.network)
        start = time.perf_counter()
        log = gen.fit(train, epochs=args.epochs, seed=args.seed, quiet=True)
        phases[f"train_{name}"] = time.perf_counter() - start
        report["training"][name] = {"seconds": round(phases[f"train_{name}"], 2), "epochs": log["epochs"],
                                    "steps": log["steps"], "batch_size": int(gen.config["batch_size"]),
                                    "final_loss": log["final_loss"], "parameters": gen.parameter_count()}
        gens[name] = gen
    start = time.perf_counter()
    ctx = reference_context(train, holdout, args.segmenter_epochs, args.seed)
    segmenter = real_train_segmenter(ctx)
    real_dice = float(score_slices(segmenter, ctx.holdout.labelled())[0]["dice"]["mean"])
    phases["segmenter"] = time.perf_counter() - start
    report["segmenter"] = {"real_holdout_dice": round(real_dice, 4), "steps": segmenter.log["steps"],
                           "epochs": args.segmenter_epochs, "seconds": segmenter.log["seconds"]}
    start = time.perf_counter()
    rows = []
    warmed = set()
    for name, solver, steps in (QUICK_SETTINGS if args.quick else FULL_SETTINGS):
        row = measure_setting(gens[name], solver, steps, holdout, segmenter, real_dice, warm_up=name not in warmed)
        warmed.add(name)
        if not args.quiet:
            print(json.dumps(row), flush=True)
        rows.append(row)
    phases["sampling_and_scoring"] = time.perf_counter() - start
    report["table"] = rows
    report["equal_quality"] = equal_quality(rows)
    report["phase_seconds"] = {k: round(v, 2) for k, v in phases.items()}
    return report


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true", help="8 patients, 1 epoch, fewer settings (a smoke run)")
    parser.add_argument("--patients", type=int, default=None, help="phantom patients (default 24; quick 8)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs of both generators (default 5; "
                                                                 "quick 1)")
    parser.add_argument("--size", type=int, default=32, help="slice size in px")
    parser.add_argument("--segmenter-epochs", type=float, default=None,
                        help="the audit's `utility_epochs` for the segmenter (default: the audit's 6; quick 2)")
    parser.add_argument("--network", default="compact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no per-setting line on stdout")
    args = parser.parse_args(argv)
    from auditors.segmentation.train import DEFAULT_UTILITY_EPOCHS

    quick = {"patients": 8, "epochs": 1, "segmenter_epochs": 2.0}
    full = {"patients": 24, "epochs": 5, "segmenter_epochs": DEFAULT_UTILITY_EPOCHS}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.patients < 6 or args.epochs < 1 or args.segmenter_epochs <= 0:
        parser.error("need --patients >= 6 (train and holdout for each of 3 vendors), --epochs >= 1, "
                     "--segmenter-epochs > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    report = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__, "platform": platform.platform(),
                          "thread_env": {k: v for k, v in os.environ.items()
                                         if k.startswith(("OMP_", "MKL_", "OPENBLAS_"))},
                          "load_average_before": _load()},
              "settings": {"quick": args.quick, "patients": args.patients, "epochs": args.epochs, "size": args.size,
                           "segmenter_epochs": args.segmenter_epochs, "network": args.network, "seed": args.seed,
                           "sample_seed": SAMPLE_SEED}}
    report.update(run(args))
    report["machine"]["load_average_after"] = _load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    eq = report["equal_quality"]
    print(f"target ratio {eq['target_ratio']}: flow {eq['chosen']['flow']['solver']} "
          f"{eq['chosen']['flow']['steps']} vs ddpm ddim {eq['chosen']['ddpm']['steps']}, "
          f"speed flow/ddpm {eq['speed_ratio_flow_over_ddpm']}x; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
