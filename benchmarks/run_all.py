"""Every benchmark in one run, each figure beside its peer measured in the same run, written to
`benchmarks/results.json` and printed as a table.

    python benchmarks/run_all.py [--quick] [--out benchmarks/results.json]
        [--only neighbours,dp,generators,demo,sampling,threads,segmenters,utility,unet]

The benchmarks themselves live beside this file and each runs in its own process (so its peak memory and its
thread pools are its own):
  neighbours  bench_neighbours.py: the audit's nearest-neighbour layer vs FAISS alone vs scikit-learn brute force,
              GFLOP/s vs torch sgemm; peak RSS of the privacy audit at 1x / 4x / 16x synthetic slices
  nn_scale    bench_nn_scale.py: the memorisation search at 100k / 1M / 10M synthetic vectors against 1M training
              vectors, IVF (the audit's nn_ivf_lists) vs exact: time, peak RSS, recall@1
  dp          bench_dp.py: DP-SGD step time and peak memory of the default generator vs a plain step
  generators  bench_generators.py: sampling slices/s and network evaluations per slice (flow vs ddpm and the rest),
              training images/s
  sampling    bench_sampling_quality.py: slices/s and network evaluations per slice of flow (Heun, Euler) and ddpm
              (DDIM) sampler settings at equal mask consistency (`fidelity.mask_dice_ratio`), both trained alike
  threads     bench_threads.py: the demo's segmenter training, generator training and sampling at 1 and 2
              threads, OpenMP wait policy default and PASSIVE
  demo        `cmri-release demo` (full) or `cmri-release release` on a reduced spec (--quick): wall time, per stage
              and per auditor
  utility     bench_utility.py: the utility audit at the demo's size (100 train / 40 test / 100 synthetic phantom
              patients, 32 px) over seeds: every paired gain with its interval, paired SDs, verdicts, cost
  realism     bench_generator_realism.py: the audit's discriminator AUC of the default generator's cohort after 2 / 4
              / 8 / 16 epochs on the demo's cohort (with and without a noise top-up), beside real test patients
  flow_variants  bench_flow_variants.py: the same discriminator AUC for settings that might buy realism in the
              demo's 2 epochs (learning rate, batch, EMA horizon, a data-dependent "informed prior" source)
  side_by_side  bench_side_by_side.py: the demo's stages whose independent jobs run side by side, one CPU core
              each (synthesis, LiRA references, copy searches), against the same jobs one after the other
  unet        bench_unet.py: the low-data and leave-one-vendor-out experiments with MONAI's standard U-Net at 64 px
              (needs the optional monai)
`--quick` shrinks every size (a smoke run of a few minutes on 2 cores); the full run takes about an hour there.
The machine's load average is recorded before and after every step: on a shared CPU it explains most of the noise.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = ("neighbours", "dp", "generators", "demo", "sampling", "threads", "segmenters", "utility", "unet", "nn_scale",
         "realism", "flow_variants", "side_by_side")
CLI = "from cmri_release.cli import main; main()"  # `cmri-release` with this interpreter

# A reduced release for --quick: fewer patients, a 30 s training budget, one utility epoch.
QUICK_SPEC = """seed = 0
[data]
size = 64
[data.phantom]
subjects = 16
[generator]
name = "flow"
minutes = 0.5
[synthesis]
subjects = 8
[audit]
utility_epochs = 1.0
[export]
out = "{out}"
"""


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def step_commands(step: str, quick: bool, work: Path) -> tuple[list[list[str]], Path | None]:
    """The command lines of one step and the JSON file the last of them writes (None: parsed from stdout)."""
    py = sys.executable
    out = work / f"{step}.json"
    if step == "neighbours":
        return [[py, str(HERE / "bench_neighbours.py"), str(out)] + (["--quick", "--reps", "2"] if quick else [])], out
    if step == "dp":
        # Memory: one process per mode (its own peak RSS); time: the modes alternating step by step in one process.
        sizes = "32" if quick else "32,64"
        memory = [py, str(HERE / "bench_dp.py"), str(work / "dp_memory.json"), "--sizes", sizes,
                  "--modes", "plain,hooks,ours", "--steps", "2" if quick else "3"]
        timing = [py, str(HERE / "bench_dp.py"), str(out), "--interleaved", "--sizes", sizes,
                  "--steps", "3" if quick else "15"]
        return [memory, timing], out
    if step == "generators":
        extra = ["--quick", "--sizes", "64", "--generators", "flow,ddpm"] if quick else []
        return [[py, str(HERE / "bench_generators.py"), str(out)] + extra], out
    if step == "sampling":
        extra = ["--quick"] if quick else ["--patients", "24", "--epochs", "5", "--size", "32"]
        return [[py, str(HERE / "bench_sampling_quality.py"), str(out), "--quiet"] + extra], out
    if step == "demo":
        release = work / "release"
        if quick:
            spec = work / "quick.toml"
            spec.write_text(QUICK_SPEC.format(out=release.as_posix()), encoding="utf-8")
            return [[py, "-c", CLI, "release", str(spec), "--quiet"]], None
        return [[py, "-c", CLI, "demo", "--out", str(release), "--quiet"]], None
    if step == "threads":
        return [[py, str(HERE / "bench_threads.py"), str(out)] + (["--quick"] if quick else [])], out
    if step == "segmenters":
        size = ["--jobs", "2", "--steps", "10", "--reps", "1"] if quick else ["--jobs", "4", "--steps", "60"]
        return [[py, str(HERE / "bench_segmenters.py"), str(out), "--workers", "1,2"] + size], out
    if step == "utility":
        size = (["--train", "9", "--test", "6", "--synthetic", "6", "--seeds", "0", "--option", "utility_epochs=1"]
                if quick else ["--seeds", "0,1,2"])
        return [[py, str(HERE / "bench_utility.py"), str(out)] + size], out
    if step == "unet":  # needs the optional monai (`pip install monai`)
        # 1500 steps: the MONAI default network is far from converged at 300-600 (benchmarks/README.md)
        return [[py, str(HERE / "bench_unet.py"), str(out)] + (["--quick"] if quick else ["--steps", "1500"])], out
    if step == "realism":
        return [[py, str(HERE / "bench_generator_realism.py"), str(out)] + (["--quick"] if quick else [])], out
    if step == "flow_variants":
        return [[py, str(HERE / "bench_flow_variants.py"), str(out)] + (["--quick"] if quick else [])], out
    if step == "side_by_side":
        return [[py, str(HERE / "bench_side_by_side.py"), str(out)] + (["--quick"] if quick else [])], out
    if step == "nn_scale":
        size = (["--index", "100000", "--queries", "10000,100000", "--nlist", "512", "--exact-queries", "2000"]
                if quick else [])
        return [[py, str(HERE / "bench_nn_scale.py"), str(out)] + size], out
    raise ValueError(f"unknown step {step!r}; known: {', '.join(STEPS)}")


def parse_stage_table(stdout: str) -> dict[str, float]:
    """The per-stage seconds the release prints (`stage  seconds` ... `total`)."""
    stages, inside = {}, False
    for line in stdout.splitlines():
        if re.match(r"^stage\s+seconds\s*$", line):
            inside = True
            continue
        if inside:
            m = re.match(r"^(.+?)\s+([0-9.]+)\s*$", line)
            if not m:
                break
            stages[m.group(1).strip()] = float(m.group(2))
    return stages


def run_step(step: str, quick: bool, work: Path) -> dict:
    commands, out = step_commands(step, quick, work)
    row = {"step": step, "load_before": load_average(), "commands": [" ".join(c) for c in commands]}
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, cwd=work, env=env)
        row["returncode"] = done.returncode
        if step == "demo":
            row["stdout"] = done.stdout
        # the demo exits 1 when the gate blocks: a verdict, not a failed benchmark
        if done.returncode not in ((0, 1) if step == "demo" else (0,)):
            row["error"] = (done.stderr.strip().splitlines() or ["(no message)"])[-1][:300]
            break
    row["wall_s"] = round(time.perf_counter() - start, 1)
    row["load_after"] = load_average()
    if "error" in row:
        return row
    if out is not None:
        row["result"] = json.loads(out.read_text())
        if step == "dp":
            row["result"]["memory"] = json.loads((work / "dp_memory.json").read_text())["results"]
    else:
        row["result"] = demo_result(row.pop("stdout"), work / "release")
    return row


def demo_result(stdout: str, release: Path) -> dict:
    stages = parse_stage_table(stdout)
    result = {"stage_seconds": stages, "verdict": stdout.strip().splitlines()[-1].split(":")[0] if stdout else ""}
    audit = release.with_name(release.name + ".audit") / "audit.json"
    if audit.exists():
        report = json.loads(audit.read_text())
        result["auditor_seconds"] = report.get("timings", {})
    return result


# ---- the table ---------------------------------------------------------------------------------------------------

def _load(row: dict) -> str:
    return f"load {row.get('load_before', ['?'])[0]}->{row.get('load_after', ['?'])[0]}"


def table(results: dict) -> str:
    lines = []
    steps = results["steps"]
    if "neighbours" in steps and "result" in steps["neighbours"]:
        row = steps["neighbours"]
        r = row["result"]
        peak = max(r["torch_sgemm_gflops"], r.get("torch_sgemm_gflops_after", 0))
        lines.append(f"## Nearest-neighbour search, k=2, dim {r['search'][0]['dim']} "
                     f"(torch sgemm {r['torch_sgemm_gflops']:.0f} / {r.get('torch_sgemm_gflops_after', 0):.0f} "
                     f"GFLOP/s before/after; {_load(row)})")
        lines.append(f"{'queries x index':>18} {'method':>9} {'seconds':>8} {'GFLOP/s':>8} {'% sgemm':>8}")
        for s in r["search"]:
            shape = f"{s['queries']} x {s['index']}"
            for method, key in (("project", "project"), ("faiss", "faiss"), ("sklearn", "sklearn")):
                seconds = s.get(f"{key}_s" if key != "sklearn" else "sklearn_brute_s")
                gflops = s.get(f"{key}_gflops")
                if seconds is None:
                    continue
                lines.append(f"{shape:>18} {method:>9} {seconds:8.2f} {gflops:8.1f} {100 * gflops / peak:7.0f}%")
            if "same_shape_gemm_gflops" in s:
                g = s["same_shape_gemm_gflops"]
                lines.append(f"{shape:>18} {'gemm only':>9} {'':>8} {g:8.1f} {100 * g / peak:7.0f}%  "
                             f"(torch.matmul of this shape, no top-k)")
            if "sklearn_gflops" in s:
                lines.append(f"{'':>18} project / sklearn speed: {s['project_gflops'] / s['sklearn_gflops']:.2f}x; "
                             f"same neighbours as FAISS: {s['same_neighbours']}")
        lines.append("")
        lines.append(f"## Privacy audit memory ({_load(row)})")
        lines.append(f"{'scale':>6} {'synthetic':>10} {'peak RSS MB':>12} {'x 1x':>6} {'input MB':>9} "
                     f"{'peak - input':>13} {'wall s':>8}")
        base = r["audit_memory"][0]["peak_rss_mb"] if r.get("audit_memory") else 1
        for a in r.get("audit_memory", []):
            images = a.get("synthetic_images_mb", float("nan"))
            lines.append(f"{a['scale']:>5}x {a['synthetic_slices']:>10} {a['peak_rss_mb']:>12.0f} "
                         f"{a['peak_rss_mb'] / base:>6.2f} {images:>9.0f} {a['peak_rss_mb'] - images:>13.0f} "
                         f"{a['wall_s']:>8.1f}")
        lines.append("")
    if "dp" in steps and "result" in steps["dp"]:
        row = steps["dp"]
        lines.append(f"## DP-SGD step vs plain step, flow (compact U-Net), batch 16, alternating in one process "
                     f"({_load(row)})")
        lines.append(f"{'px':>4} {'plain s':>8} {'ours s':>8} {'x plain':>8} {'Opacus defaults s':>18} {'x plain':>8}")
        for d in row["result"]["interleaved"]:
            t, x = d["s_per_step"], d["x_plain"]
            lines.append(f"{d['size']:>4} {t['plain']:8.3f} {t['ours']:8.3f} {x['ours']:8.2f} "
                         f"{t['opacus defaults']:18.3f} {x['opacus defaults']:8.2f}")
        lines.append(f"{'px':>4} {'mode':>10} {'peak MB':>8} {'x plain':>8}   (one process per mode)")
        for d in row["result"].get("memory", []):
            if "error" in d:
                lines.append(f"{d['size']:>4} {d['mode']:>10}  failed: {d['error'][:80]}")
                continue
            lines.append(f"{d['size']:>4} {d['mode']:>10} {d['peak_rss_mb']:8.0f} {d.get('memory_ratio', 1.0):8.2f}")
        lines.append("")
    if "generators" in steps and "result" in steps["generators"]:
        row = steps["generators"]
        lines.append(f"## Generators: sampling and training, compact networks, default sampler steps ({_load(row)})")
        lines.append(f"{'generator':>10} {'px':>4} {'slices/s':>9} {'net evals/slice':>16} {'train img/s':>12}")
        for g in row["result"]["results"]:
            lines.append(f"{g['generator']:>10} {g['size']:>4} {g['sample_slices_per_s']:>9.2f} "
                         f"{g['network_evaluations_per_slice']:>16} {g['train_images_per_s']:>12.2f}")
        lines.append("")
    if "sampling" in steps and "result" in steps["sampling"]:
        row = steps["sampling"]
        r = row["result"]
        s = r["settings"]
        lines.append(f"## Sampling at equal mask consistency, flow vs ddpm ({s['patients']} patients, {s['size']} px, "
                     f"{s['epochs']} epochs each, segmenter real-holdout Dice "
                     f"{r['segmenter']['real_holdout_dice']:.3f}; {_load(row)})")
        lines.append(f"{'generator':>10} {'solver':>7} {'steps':>6} {'net evals/slice':>16} {'slices/s':>9} "
                     f"{'mask Dice ratio':>16}")
        for g in r["table"]:
            lines.append(f"{g['generator']:>10} {g['solver']:>7} {g['steps']:>6} {g['evaluations_per_slice']:>16} "
                         f"{g['slices_per_s']:>9.2f} {g['mask_dice_ratio']:>16.3f}")
        eq = r["equal_quality"]
        flow, ddpm = eq["chosen"]["flow"], eq["chosen"]["ddpm"]
        lines.append(f"target ratio {eq['target_ratio']:.3f} ({eq['target_share']} x the lower best): cheapest flow "
                     f"{flow['solver']} {flow['steps']} ({flow['evaluations_per_slice']} evals), ddpm ddim "
                     f"{ddpm['steps']} ({ddpm['evaluations_per_slice']} evals); flow / ddpm speed "
                     f"{eq['speed_ratio_flow_over_ddpm']:.2f}x")
        lines.append("")
    if "demo" in steps and "result" in steps["demo"]:
        row = steps["demo"]
        d = row["result"]
        lines.append(f"## End to end: {'reduced spec (--quick)' if results['quick'] else 'cmri-release demo'}, "
                     f"verdict {d.get('verdict', '?')}, wall {row['wall_s']:.0f} s ({_load(row)})")
        for name, seconds in d.get("stage_seconds", {}).items():
            lines.append(f"{name:>16} {seconds:8.1f} s")
        for name, seconds in d.get("auditor_seconds", {}).items():
            lines.append(f"{'audit: ' + name:>40} {seconds:8.1f} s")
        lines.append("")
    if "threads" in steps and "result" in steps["threads"]:
        row = steps["threads"]
        r = row["result"]
        lines.append(f"## Thread settings, {r['size']} px: seconds (speed-up over 1 thread, default policy) ({_load(row)})")
        lines.append(f"{'threads':>8} {'OMP wait':>9} {'segmenter train':>20} {'generator train':>20} {'sampling':>20}")
        for t in r["rows"]:
            up = t["speedup_vs_1_thread_default"]
            cells = [f"{t[k]:.2f} s ({up[k]:.2f}x)" for k in ("segmenter_train_s", "generator_train_s", "sampling_s")]
            lines.append(f"{t['omp_num_threads']:>8} {t['omp_wait_policy']:>9} {cells[0]:>20} {cells[1]:>20} {cells[2]:>20}")
        lines.append("")
    if "segmenters" in steps and "result" in steps["segmenters"]:
        row = steps["segmenters"]
        r = row["result"]
        lines.append(f"## Independent segmenter trainings ({r['jobs']} x {r['steps']} steps, {r['size']} px, "
                     f"{r['device']}): one at a time vs side by side ({_load(row)})")
        for t in r["runs"]:
            lines.append(f"{t['workers']:>3} at a time {t['seconds']:8.2f} s  {t['speedup']:.2f}x")
        lines.append("")
    if "utility" in steps and "result" in steps["utility"]:
        row = steps["utility"]
        lines.append(f"## Utility audit on the phantom, perfect generator ({_load(row)})")
        for name, c in row["result"]["summary"].items():
            lines.append(f"{name:30s} mean {c['mean']:+.4f}  paired SD {c['paired_sd_mean']:.4f}  {c['verdicts']}")
        lines.append("")
    if "unet" in steps and "result" in steps["unet"]:
        row = steps["unet"]
        lines.append(f"## Utility with a standard U-Net ({row['result']['setup']['network']}; {_load(row)})")
        for name, g in row["result"]["gains"].items():
            lines.append(f"{name:40s} {g['estimate']:+.4f} [{g['lower']:+.4f}, {g['upper']:+.4f}]")
        lines.append("")
    if "nn_scale" in steps and "result" in steps["nn_scale"]:
        row = steps["nn_scale"]
        r = row["result"]
        lines.append(f"## Memorisation search at scale: {r['index']} training vectors, dim {r['dim']}, IVF "
                     f"{r['nlist']} lists / {r['nprobe']} probed vs exact ({_load(row)})")
        for t in r["runs"]:
            lines.append(f"{t['queries']:>10} queries  IVF {t['ivf_seconds']:8.1f} s  exact {t['exact_seconds']:9.1f} s"
                         f"{' (extrapolated)' if t['exact_extrapolated'] else ''}  recall@1 {t['recall_at_1']:.3f} "
                         f"(near copies {t['recall_at_1_near_copies']})  peak {t['peak_rss_mb']:.0f} MB")
        lines.append("")
    if "realism" in steps and "result" in steps["realism"]:
        row = steps["realism"]
        lines.append(f"## Discriminator AUC of the default generator by training budget ({_load(row)})")
        for t in row["result"]["rows"]:
            extra = (f"  train {t['train_s']:.0f} s  with noise top-up {t['auc_with_noise_top_up']:.3f}"
                     if "epochs" in t else "")
            lines.append(f"{t['case']:32s} AUC {t['auc']:.3f}{extra}")
        lines.append("")
    if "flow_variants" in steps and "result" in steps["flow_variants"]:
        row = steps["flow_variants"]
        lines.append(f"## Discriminator AUC of flow variants at equal epochs ({_load(row)})")
        for t in row["result"]["rows"]:
            lines.append(f"{t['variant']:44s} AUC {t['auc']:.3f}  train {t['train_s']:.0f} s")
        lines.append("")
    for name, row in steps.items():
        if "error" in row:
            lines.append(f"{name}: FAILED (exit {row['returncode']}): {row['error']}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few minutes")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps among {', '.join(STEPS)}")
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown or not args.steps:
        parser.error(f"--only: unknown step(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(STEPS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    results = {"quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                           "thread_env": {k: v for k, v in os.environ.items()
                                          if k.startswith(("OMP_", "MKL_", "OPENBLAS_"))}},
               "steps": {}}
    with tempfile.TemporaryDirectory(prefix="cmri-bench-") as tmp:
        for step in args.steps:
            print(f"[{step}] load {load_average()}", file=sys.stderr, flush=True)
            results["steps"][step] = run_step(step, args.quick, Path(tmp))
            print(f"[{step}] {results['steps'][step]['wall_s']} s", file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(f"wrote {args.out}")
    return 1 if any("error" in r for r in results["steps"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
