"""The memorisation search at millions of synthetic slices: the audit's IVF index against exact search.

    python benchmarks/bench_nn_scale.py OUT.json [--index 1000000] [--queries 100000,1000000,10000000]

Against an index of `--index` training vectors (dim 64, the embedding's; unit rows, inner product, as the audit),
each query count runs in its own process (its own peak RSS) and streams its queries: they are generated chunk by
chunk from a seeded generator (never all at once: 10M x 64 float32 would be 2.6 GB) and searched through the
audit's `NeighbourIndex` (FAISS IndexIVFFlat, `nn_ivf_lists` lists, `nn_nprobe` probed); only the top-1 ids of a
sample of queries are kept. The peer is exact search (FAISS IndexFlatIP, what the audit uses by default): it is
timed on the first `--exact-queries` queries and extrapolated linearly to the full count (exact search cost is
linear in the queries; the table says which figures are extrapolated), and it gives the ground truth for recall@1
on that sample.

The vectors are a mixture: `--clusters` unit centres with noise around them (embeddings cluster by anatomy and
vendor; uniform random vectors would be the worst case for any inverted index), and 1% of the queries are near
copies of training vectors (what the memorisation audit looks for).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditors.privacy.neighbours import NeighbourIndex  # noqa: E402

CHUNK = 500_000  # queries generated and searched at a time: 128 MB of float32 at dim 64
COPY_SHARE = 0.01
NEAR = 0.99  # similarity of a near copy (the generated ones are about 0.997)


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def centres(n: int, dim: int, seed: int) -> np.ndarray:
    return _unit(np.random.default_rng([seed, 0]).standard_normal((n, dim), dtype=np.float32))


def mixture(n: int, c: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    x = c[rng.integers(0, len(c), n)] + rng.standard_normal((n, c.shape[1]), dtype=np.float32) * spread
    return _unit(x)


def index_vectors(n: int, dim: int, clusters: int, seed: int, spread: float) -> np.ndarray:
    c = centres(clusters, dim, seed)
    out = np.empty((n, dim), np.float32)
    for i, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        out[start:stop] = mixture(stop - start, c, np.random.default_rng([seed, 1, i]), spread)
    return out


def query_chunks(n: int, train: np.ndarray, clusters: int, seed: int, spread: float):
    """(start, chunk) for n queries, chunk by chunk, reproducible from the seed alone."""
    c = centres(clusters, train.shape[1], seed)
    for i, start in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng([seed, 2, i])
        m = min(CHUNK, n - start)
        q = mixture(m, c, rng, spread)
        copies = rng.random(m) < COPY_SHARE  # near copies of training vectors
        src = rng.integers(0, len(train), int(copies.sum()))
        q[copies] = _unit(train[src] + rng.standard_normal((len(src), train.shape[1]), dtype=np.float32) * 0.01)
        yield start, q


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(args) -> dict:
    import faiss

    n = args.one
    t0 = time.perf_counter()
    train = index_vectors(args.index, args.dim, args.clusters, args.seed, args.spread)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    ivf = NeighbourIndex(train, metric="ip", ivf_lists=args.nlist, nprobe=args.nprobe, seed=args.seed)
    t_build = time.perf_counter() - t0
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(train)
    sample_n = min(args.exact_queries, n)
    ivf_seconds, exact_seconds, gen_seconds = 0.0, 0.0, 0.0
    ivf_top, exact_top, near = None, None, 0
    t_gen0 = time.perf_counter()
    for start, q in query_chunks(n, train, args.clusters, args.seed + 1, args.spread):
        gen_seconds += time.perf_counter() - t_gen0
        t0 = time.perf_counter()
        scores, ids = ivf.search(q, 1)
        ivf_seconds += time.perf_counter() - t0
        near += int((scores[:, 0] > NEAR).sum())  # near copies found (the audit's statistic, in brief)
        if start == 0:
            ivf_top, ivf_score = ids[:sample_n, 0].copy(), scores[:sample_n, 0].copy()
            t0 = time.perf_counter()
            e_scores, e_ids = exact.search(q[:sample_n], 1)
            exact_seconds = time.perf_counter() - t0
            exact_top, exact_score = e_ids[:, 0], e_scores[:, 0]
        t_gen0 = time.perf_counter()
    recall = float(np.mean(ivf_top == exact_top))
    copies = exact_score > NEAR  # the sampled queries that are near copies of a training vector
    # How much farther IVF's neighbour is than the true one, as a Euclidean distance between unit vectors.
    d_ivf, d_exact = (np.sqrt(np.clip(2 - 2 * s.astype(np.float64), 0, None)) for s in (ivf_score, exact_score))
    return {"queries": n, "index": args.index, "dim": args.dim, "ivf": ivf.describe(),
            "ivf_seconds": round(ivf_seconds, 2), "ivf_queries_per_s": round(n / ivf_seconds, 1),
            "exact_sample_queries": sample_n, "exact_sample_seconds": round(exact_seconds, 2),
            "exact_seconds": round(exact_seconds * n / sample_n, 1), "exact_extrapolated": sample_n < n,
            "speedup": round(exact_seconds * n / sample_n / ivf_seconds, 1), "recall_at_1": round(recall, 4),
            "recall_at_1_near_copies": round(float(np.mean(ivf_top[copies] == exact_top[copies])), 4)
            if copies.any() else None, "near_copies_in_sample": int(copies.sum()),
            "distance_excess_median": round(float(np.median(d_ivf - d_exact)), 5),
            "near_copies_found": near, "build_seconds": round(t_build, 2), "generate_seconds":
            round(t_gen + gen_seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "index_mb": round(train.nbytes / 2**20, 1), "all_queries_mb": round(n * args.dim * 4 / 2**20, 1)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--index", type=int, default=1_000_000)
    p.add_argument("--queries", default="100000,1000000,10000000")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--spread", type=float, default=0.05, help="noise sd per dimension around a centre")
    p.add_argument("--nlist", type=int, default=2048, help="IVF lists (the audit's nn_ivf_lists)")
    p.add_argument("--nprobe", type=int, default=16, help="lists probed per query (the audit's nn_nprobe)")
    p.add_argument("--exact-queries", type=int, default=20_000, help="queries searched exactly (timing, recall)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: one size, this process
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.queries.split(",") if s.strip()]
    if not args.sizes or min(args.sizes) < 1 or args.index < 1:
        p.error("--queries and --index must be positive counts")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args)))
        return
    rows = []
    for n in args.sizes:  # one process per size: its own peak memory
        cmd = [sys.executable, __file__, str(args.out), "--one", str(n), "--index", str(args.index),
               "--dim", str(args.dim), "--clusters", str(args.clusters), "--spread", str(args.spread),
               "--nlist", str(args.nlist), "--nprobe", str(args.nprobe), "--exact-queries", str(args.exact_queries),
               "--seed", str(args.seed)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            sys.exit(f"bench_nn_scale: {n} queries failed: {done.stderr.strip()[-500:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"index": args.index, "dim": args.dim, "nlist": args.nlist, "nprobe": args.nprobe,
                                    "clusters": args.clusters, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
