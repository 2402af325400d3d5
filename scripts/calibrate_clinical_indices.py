"""Calibrate `fidelity.clinical_index_distance`: honest, degraded and shifted cohorts at the demo's size.

    python scripts/calibrate_clinical_indices.py OUT.json --seeds 301 302 303 305 306 307 308 309 [--draws 100]
        [--pool POOL.json] [--per-cohort 100] [--synthetic 300]  # reuse (or write) the pool's indices: building 800 patients takes ~2 min of CPU

Builds a pool of phantom patients (100 per seed, 32 px as in the demo), then for each draw takes n holdout and
n "synthetic" patients, disjoint (the honest stand-in: fresh real patients), and judges with the auditor's rule
(`population_bounds`, worst case over the 7 indices):
  honest      the fresh patients as they are;
  shrunk      their label maps scaled by 0.9 about the centre (volumes x 0.81);
  shuffled    their group labels permuted;
  uniform X   every group's mean shifted by X pooled SDs (known population distance X, every index);
  one-group X the noisiest group of each index shifted so that the population distance is X (the worst spread).
For each case: verdicts at the threshold, and for the cases with a known population distance (shifted ones, and
shrunk with the distance measured on the whole pool) the coverage of the upper and lower bounds per index.
Prints the phantom's group spreads (the noisiest group's variance over the pooled one) and the plan's figures.
docs/clinical-indices.md holds the latest figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

from auditors.fidelity.clinical_indices import (ALPHA, INDICES, MIN_DOF_TO_FAIL, MIN_PER_GROUP_TO_PASS,
                                                ClinicalIndicesAuditor, group_distance, population_bounds,
                                                shared_groups, slice_indices, smd_variances)
from auditors.fidelity.degradations import shrink_labels
from cmri_release.phantom import make_phantom
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices


def pool(seeds, per_seed: int = 100) -> dict:
    rows = {}
    for seed in seeds:
        s = cohort_to_slices(make_phantom(per_seed, seed=seed), PreprocessConfig(size=32))
        ok, _ = slice_indices(s)
        s.labels = shrink_labels(s.labels, 0.9)
        bad, _ = slice_indices(s)
        rows.update({sid: {"honest": r, "shrunk": bad.get(sid)} for sid, r in ok.items()})
    return rows


def judge(a, ga, b, gb, threshold):
    """The auditor's rule on index tables: per index (lower, upper, estimate), and the verdict."""
    groups = shared_groups(ga, gb)
    d, _ = group_distance(a, ga, b, gb, groups)
    v, w, sd_dof = smd_variances(a, ga, b, gb, groups)
    dof = sum(int((gb == g).sum()) - 1 for g in groups)
    smallest = min(min(int((ga == g).sum()), int((gb == g).sum())) for g in groups)
    out = []
    for j in range(len(INDICES)):
        lo, up = population_bounds(float(d[j]), w, v[:, j], float(sd_dof[j]), ALPHA / len(INDICES))
        lo = 0.0 if dof < MIN_DOF_TO_FAIL else lo
        up = max(up, math.nextafter(threshold, math.inf)) if smallest < MIN_PER_GROUP_TO_PASS else up
        out.append((lo, up, float(d[j])))
    out = np.array(out)
    verdict = "pass" if out[:, 1].max() <= threshold else "fail" if out[:, 0].max() > threshold else "inconclusive"
    return out, verdict


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[301, 302, 303, 305, 306, 307, 308, 309])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--pool-per-seed", type=int, default=100)
    parser.add_argument("--pool", help="JSON of the pool's indices: read if it exists, else written")
    parser.add_argument("--per-cohort", type=int, default=100, help="patients per holdout / synthetic draw")
    parser.add_argument("--synthetic", type=int, default=None,
                        help="synthetic patients per draw when not --per-cohort (synthetic patients are free)")
    parser.add_argument("--threshold", type=float, default=1.1)
    parser.add_argument("--shifts", type=float, nargs="*", default=[0.6, 1.1])
    args = parser.parse_args()
    if args.pool and os.path.exists(args.pool):
        rows = json.load(open(args.pool))
    else:
        rows = pool(args.seeds, args.pool_per_seed)
        if args.pool:
            json.dump(rows, open(args.pool, "w"))
    ids = sorted(rows)
    x = np.array([[rows[i]["honest"][k] for k in INDICES] for i in ids])
    xs = np.array([[rows[i]["shrunk"][k] for k in INDICES] for i in ids])
    g_all = np.array([rows[i]["honest"]["group"] for i in ids])
    groups = sorted(set(g_all))
    share = {g: float((g_all == g).mean()) for g in groups}
    pooled = np.sqrt(sum(((x[g_all == g] - x[g_all == g].mean(0)) ** 2).sum(0) for g in groups)
                     / (len(x) - len(groups)))
    ratio = {g: (x[g_all == g].var(0, ddof=1) / pooled ** 2) for g in groups}
    noisiest = [max(groups, key=lambda g: ratio[g][j]) for j in range(len(INDICES))]
    shrunk_delta = np.sqrt(sum(share[g] * ((xs[g_all == g].mean(0) - x[g_all == g].mean(0)) / pooled) ** 2
                               for g in groups))
    print(f"pool: {len(ids)} patients, groups {dict((g, int((g_all == g).sum())) for g in groups)}")
    for j, key in enumerate(INDICES):
        print(f"  {key:10s} noisiest group {noisiest[j]} variance x{ratio[noisiest[j]][j]:.2f} pooled; "
              f"shrunk population distance {shrunk_delta[j]:.3f}")
    n = args.per_cohort
    n_syn = args.synthetic or n
    cases = ["honest", "shrunk", "shuffled"] + [f"uniform {s}" for s in args.shifts] + \
            [f"one-group {s}" for s in args.shifts]
    out = {c: {"verdicts": [], "bounds": [], "truth": []} for c in cases}
    for draw in range(args.draws):
        rng = np.random.default_rng(1000 + draw)
        pick = rng.permutation(len(ids))[:n + n_syn]
        h, s = pick[:n], pick[n:]
        b, gb = x[h], g_all[h]
        for case in cases:
            a, ga, truth = x[s].copy(), g_all[s], np.zeros(len(INDICES))
            if case == "shrunk":
                a, truth = xs[s], shrunk_delta
            elif case == "shuffled":
                ga, truth = rng.permutation(ga), np.full(len(INDICES), np.nan)
            elif case.startswith("uniform"):
                delta = float(case.split()[1])
                a += delta * pooled
                truth = np.full(len(INDICES), delta)
            elif case.startswith("one-group"):
                delta = float(case.split()[1])
                for j in range(len(INDICES)):
                    a[ga == noisiest[j], j] += delta / math.sqrt(share[noisiest[j]]) * pooled[j]
                # the population distance with the holdout's group shares (the weights the distance uses)
                truth = np.array([math.sqrt((gb == noisiest[j]).mean() / share[noisiest[j]]) * delta
                                  for j in range(len(INDICES))])
            bounds, verdict = judge(a, ga, b, gb, args.threshold)
            out[case]["verdicts"].append(verdict)
            out[case]["bounds"].append(bounds.tolist())
            out[case]["truth"].append(truth.tolist())
    print(f"{args.draws} draws of {n_syn} synthetic vs {n} holdout, threshold {args.threshold}")
    for case in cases:
        v = out[case]["verdicts"]
        bounds, truth = np.array(out[case]["bounds"]), np.array(out[case]["truth"])
        up = bounds[:, :, 1].max(1)
        line = (f"{case:14s} pass {v.count('pass')}, fail {v.count('fail')}, inconclusive {v.count('inconclusive')};"
                f" worst upper median {np.median(up):.2f} max {up.max():.2f}, worst estimate median "
                f"{np.median(bounds[:, :, 2].max(1)):.2f}")
        if case != "shuffled" and truth.max() > 0:
            cover_up = (bounds[:, :, 1] >= truth).mean(0)
            cover_lo = (bounds[:, :, 0] <= truth).mean(0)
            line += f"; upper coverage min {cover_up.min():.3f} (per index {np.round(cover_up, 3).tolist()})," \
                    f" lower coverage min {cover_lo.min():.3f}"
        print(line)
        out[case]["summary"] = line
    plan = ClinicalIndicesAuditor._plan_figures(n_syn, n, len(groups), args.threshold)
    print(f"plan at {n_syn}/{n}: {plan}")
    out["plan"] = plan
    with open(args.out, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
