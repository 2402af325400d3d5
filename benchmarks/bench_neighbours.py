"""Nearest-neighbour search of the privacy audit: the project's layer vs FAISS alone vs sklearn brute force,
at 10k x 10k and 100k x 10k (synthetic queries x training slices) in the embedding's dimension, with the
effective GFLOP/s against torch sgemm measured in the same run; then the peak RSS and wall time of the whole
privacy audit at 1x, 4x and 16x synthetic slices (each in a fresh process). Written as JSON.

    python benchmarks/bench_neighbours.py OUT.json [--quick] [--reps 3] [--dim 64]

`--quick` shrinks the sizes (2k x 2k, 10k x 2k; audit at 1x / 4x) for a smoke run. The machine load is
recorded, since shared CPUs make timings noisy; the FAISS and project timings are interleaved so that
load affects both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _time(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def sgemm_gflops(n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = min(_time(lambda: torch.matmul(a, b), reps))
    return 2 * n**3 / best / 1e9


def same_shape_gemm_gflops(n_queries: int, n_index: int, dim: int, block: int = 4096, reps: int = 3) -> float:
    """torch.matmul of (block x dim) @ (dim x n_index) over all query blocks, no top-k: the GEMM alone that any exact
    search of this shape must do. With dim 64 each output element costs 128 FLOP but must be written and read back,
    so this runs far below the square sgemm peak; it is the ceiling an exact search of this shape can approach."""
    import torch

    q = torch.from_numpy(_unit(n_queries, dim, 1))
    b = torch.from_numpy(_unit(n_index, dim, 2)).T.contiguous()

    def run():
        for start in range(0, n_queries, block):
            torch.matmul(q[start:start + block], b)

    run()  # warm-up
    return 2.0 * n_queries * n_index * dim / min(_time(run, reps)) / 1e9


def bench_search(n_queries: int, n_index: int, dim: int, k: int, reps: int, sklearn_too: bool) -> dict:
    import faiss
    from sklearn.neighbors import NearestNeighbors

    from auditors.privacy.neighbours import NeighbourIndex

    queries, base = _unit(n_queries, dim, 1), _unit(n_index, dim, 2)
    project = NeighbourIndex(base, metric="ip")
    raw = faiss.IndexFlatIP(dim)
    raw.add(base)
    project.search(queries[:1000], k), raw.search(queries[:1000], k)  # warm-up
    t_project, t_faiss = [], []
    for _ in range(reps):  # interleaved, so machine load hits both alike
        t_project += _time(lambda: project.search(queries, k), 1)
        t_faiss += _time(lambda: raw.search(queries, k), 1)
    _, ids_p = project.search(queries, k)
    _, ids_f = raw.search(queries, k)
    flop = 2.0 * n_queries * n_index * dim
    out = {"queries": n_queries, "index": n_index, "dim": dim, "k": k,
           "project_s": float(np.median(t_project)), "faiss_s": float(np.median(t_faiss)),
           "project_runs_s": t_project, "faiss_runs_s": t_faiss,
           "same_neighbours": bool((ids_p == ids_f).all())}
    # The same FAISS call underneath: the best of the interleaved runs is the fairest comparison on a shared CPU.
    out["project_best_s"], out["faiss_best_s"] = min(t_project), min(t_faiss)
    out["project_over_faiss"] = out["project_best_s"] / out["faiss_best_s"]
    out["project_over_faiss_median"] = out["project_s"] / out["faiss_s"]
    out["project_gflops"] = flop / out["project_s"] / 1e9
    out["faiss_gflops"] = flop / out["faiss_s"] / 1e9
    out["same_shape_gemm_gflops"] = same_shape_gemm_gflops(n_queries, n_index, dim)
    if sklearn_too:
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(base)
        t_sk = _time(lambda: nn.kneighbors(queries), max(1, reps - 1))
        out["sklearn_brute_s"] = float(np.median(t_sk))
        out["sklearn_gflops"] = flop / out["sklearn_brute_s"] / 1e9
        out["sklearn_same_top1"] = float(np.mean(nn.kneighbors(queries[:2000])[1][:, 0] == ids_f[:2000, 0]))
    return out


AUDIT_CHILD = r"""
import json, resource, sys, time
import numpy as np
from scipy import ndimage
from cmri_release.core.sliceset import SliceSet
from cmri_release.audit import run_audit

scale, patients, slices, size, steps = (int(a) for a in sys.argv[1:6])
rng = np.random.default_rng(0)

def cohort(n, prefix):
    base = ndimage.gaussian_filter(rng.standard_normal((n, 1, size, size)), (0, 0, 3, 3))
    drift = ndimage.gaussian_filter(rng.standard_normal((n, slices, size, size)), (0, 0, 3, 3))
    images = (base + 0.3 * drift).reshape(-1, size, size).astype(np.float32)
    m = len(images)
    return SliceSet(images=images, labels=np.zeros(images.shape, np.uint8),
                    subject_ids=np.repeat([f"{prefix}{i}" for i in range(n)], slices), vendors=np.full(m, "A"),
                    phases=np.full(m, "ED"), slice_pos=np.zeros(m), slice_index=np.tile(np.arange(slices), n),
                    has_label=np.zeros(m, bool), spacing_mm=2.5)

train, holdout, synthetic = cohort(patients, "t"), cohort(patients, "h"), cohort(patients * scale, "s")
start = time.perf_counter()
report = run_audit(train, holdout, synthetic, groups=["privacy"], options={"embedding_steps": steps}, quiet=True)
print(json.dumps({"scale": scale, "synthetic_slices": len(synthetic), "train_slices": len(train),
                  "synthetic_images_mb": synthetic.images.nbytes / 2**20,
                  "wall_s": time.perf_counter() - start, "timings": report.timings,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_audit_memory(scales, patients: int, slices: int, size: int, steps: int) -> list[dict]:
    root = Path(__file__).resolve().parents[1]
    out = []
    for scale in scales:
        done = subprocess.run([sys.executable, "-c", AUDIT_CHILD, str(scale), str(patients), str(slices), str(size),
                               str(steps)], capture_output=True, text=True, cwd=root, check=True)
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dim", type=int, default=64, help="the embedding's dimension (EmbeddingConfig.dim)")
    args = parser.parse_args()
    import faiss
    import torch

    sizes = [(2000, 2000), (10000, 2000)] if args.quick else [(10000, 10000), (100000, 10000)]
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "faiss_threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__,
                          "load_before": _load()},
              "torch_sgemm_gflops": sgemm_gflops(), "search": []}
    for n_queries, n_index in sizes:
        result["search"].append(bench_search(n_queries, n_index, args.dim, k=2, reps=args.reps, sklearn_too=True))
        print(json.dumps(result["search"][-1]), file=sys.stderr)
    result["torch_sgemm_gflops_after"] = sgemm_gflops()
    scales = (1, 4) if args.quick else (1, 4, 16)
    result["audit_memory"] = bench_audit_memory(scales, patients=20, slices=20, size=64, steps=20 if args.quick else 60)
    result["machine"]["load_after"] = _load()
    result["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "search"}, indent=1))


if __name__ == "__main__":
    main()
