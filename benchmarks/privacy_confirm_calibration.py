"""How well does the copy-confirmation rule's normal null model describe honest cohorts? Read offline from the
per-part scores `privacy_group_seeds.py --scores DIR` keeps.

A confirming part confirms a synthetic patient when its score is above the upper confidence bound of the fitted
(1 - 0.01 / n_synthetic) quantile of the null (normal in Fisher z) and above every null patient
(`memorisation.near_copies`). On an honest cohort the synthetic patients are new patients like the null's, so the
largest synthetic score, in null standard deviations above the null's mean,

    T = (max_i z(synthetic_i) - mean z(null)) / sd z(null),

has a law the normal model fixes (simulated here with the same numbers of patients). Printed: the observed share of
(seed, part) pairs with T above each level beside the model's, per part the mean and largest T, and the rule's own
outcome (bar height in null sds; parts and seeds with a confirmed honest patient).

    python benchmarks/privacy_confirm_calibration.py DIR [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditors.privacy.calibration import fisher_z, patient_folds  # noqa: E402
from auditors.privacy.memorisation import CONFIRMING_PARTS, Part, near_copies  # noqa: E402

LEVELS = (2.5, 3.0, 3.5, 4.0, 4.5)


def confirming(name: str) -> bool:
    """`auditor.part`: every real_copies part confirms; memorisation's feature-space parts only flag."""
    auditor, part = name.split(".", 1)
    return auditor == "real_copies" or part in CONFIRMING_PARTS


def load(folder: Path) -> dict[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{seed: {auditor.part: (null scores, synthetic scores)}} of the confirming parts, finite scores only."""
    out = {}
    for path in sorted(folder.glob("seed_*.npz")):
        seed = int(path.stem.split("_")[1])
        with np.load(path) as data:
            names = sorted({k.rsplit(".", 1)[0] for k in data.files})
            parts = {}
            for name in names:
                null, syn = data[f"{name}.null"], data[f"{name}.synthetic"]
                if confirming(name):
                    parts[name] = (null[np.isfinite(null)], syn[np.isfinite(syn)], len(syn))
            out[seed] = parts
    return out


def standardised_max(null: np.ndarray, synthetic: np.ndarray) -> float:
    zn, zs = fisher_z(null), fisher_z(synthetic)
    return float((zs.max() - zn.mean()) / zn.std(ddof=1))


def model_law(n_null: int, n_synthetic: int, draws: int, seed: int = 0) -> np.ndarray:
    """T under the rule's model: null and synthetic z both normal with the same mean and sd."""
    rng = np.random.default_rng(seed)
    null = rng.standard_normal((draws, n_null))
    syn = rng.standard_normal((draws, n_synthetic))
    return (syn.max(axis=1) - null.mean(axis=1)) / null.std(axis=1, ddof=1)


def rule_bar(null: np.ndarray, n_synthetic: int) -> float:
    """The confirmation bar `near_copies` itself sets for this null, in null sds above the null's mean."""
    unscored = np.full(n_synthetic, np.nan)  # the bar depends on the null and the cohort's size only
    bar = near_copies(Part("robust", unscored, null, unscored, np.full(n_synthetic, -1)), n_synthetic,
                      patient_folds(len(null), 0))["confirm_threshold"]
    zn = fisher_z(null)
    return float((fisher_z([bar])[0] - zn.mean()) / zn.std(ddof=1))


def summarise(seeds: dict, draws: int = 20000) -> dict:
    rows = [(seed, name, standardised_max(null, syn), rule_bar(null, n_syn), len(null), len(syn))
            for seed, parts in seeds.items() for name, (null, syn, n_syn) in parts.items()]
    if not rows:
        raise SystemExit("no scores found: run privacy_group_seeds.py with --scores first")
    t = np.array([r[2] for r in rows])
    n_null, n_syn = int(np.median([r[4] for r in rows])), int(np.median([r[5] for r in rows]))
    law = model_law(n_null, n_syn, draws)
    confirmed = sorted({(r[0], r[1]) for r in rows if r[2] > r[3]})
    by_part = {}
    for name in sorted({r[1] for r in rows}):
        mine = np.array([r[2] for r in rows if r[1] == name])
        by_part[name] = {"mean_T": float(mine.mean()), "max_T": float(mine.max()), "seeds": len(mine)}
    return {
        "seeds": len(seeds), "pairs": len(rows), "null_patients": n_null, "synthetic_patients": n_syn,
        "exceedance": {str(level): {"observed": float(np.mean(t > level)), "count": int((t > level).sum()),
                                    "model": float(np.mean(law > level))} for level in LEVELS},
        "model_mean_T": float(law.mean()), "observed_mean_T": float(t.mean()),
        "bar_sd": {"median": float(np.median([r[3] for r in rows])), "min": float(min(r[3] for r in rows))},
        "confirmed_honest": [f"seed {s}: {n}" for s, n in confirmed],
        "seeds_with_confirmed": len({s for s, _ in confirmed}),
        "by_part": by_part,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = ap.parse_args()
    s = summarise(load(args.folder))
    if args.json:
        print(json.dumps(s))
        return
    print(f"{s['pairs']} (seed, confirming part) pairs over {s['seeds']} seeds; "
          f"{s['null_patients']} null / {s['synthetic_patients']} synthetic patients")
    print("T = largest synthetic score in null sds above the null mean (Fisher z)")
    print("| T above | observed | normal model |\n|---|---|---|")
    for level, e in s["exceedance"].items():
        print(f"| {level} | {e['observed']:.3f} ({e['count']}) | {e['model']:.4f} |")
    print(f"mean T: observed {s['observed_mean_T']:.2f}, model {s['model_mean_T']:.2f}; the rule's bar: median "
          f"{s['bar_sd']['median']:.2f} sd (lowest {s['bar_sd']['min']:.2f})")
    print(f"honest patients confirmed: {len(s['confirmed_honest'])} part(s) in {s['seeds_with_confirmed']} of "
          f"{s['seeds']} seeds {s['confirmed_honest']}")
    print("| part | mean T | largest T |\n|---|---|---|")
    for name, p in s["by_part"].items():
        print(f"| {name} | {p['mean_T']:.2f} | {p['max_T']:.2f} |")


if __name__ == "__main__":
    main()
