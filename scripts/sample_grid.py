"""Real vs synthetic slices per vendor, as one PNG, plus the mean intensity inside each structure.

    python scripts/sample_grid.py MODEL DATA OUT.png [--per-vendor 4] [--seed 0] [--json STATS.json]

For each vendor of DATA (a real cohort, preprocessed with the model's settings), three rows: real mid-ventricular
slices with the label contours, the model's images for those same label maps, and images for label maps drawn by the
model's mask generator (new patients). The figure shows real patients' images: keep it internal.
The printed table compares, per vendor, the mean intensity inside background, RV, myocardium and LV cavity of
real slices and of synthetic slices made from the same label maps.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STRUCTURES = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}


def structure_means(images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {name: float(images[labels == k].mean()) if (labels == k).any() else float("nan")
            for name, k in STRUCTURES.items()}


def intensity_table(gen, real, seed: int = 0) -> dict:
    """Per vendor: mean intensity per structure, real vs synthetic from the same label maps."""
    out = {}
    lab = real.labelled()
    for vendor in lab.vendor_names:
        if vendor not in gen.vendors:
            continue
        sel = np.flatnonzero(lab.vendors == vendor)
        synthetic = gen.sample(lab.labels[sel], vendor, seed=seed)
        out[vendor] = {"real": structure_means(lab.images[sel], lab.labels[sel]),
                       "synthetic": structure_means(synthetic, lab.labels[sel]),
                       "real_noise_sd": float(np.std(lab.images[sel] - _smooth(lab.images[sel]))),
                       "synthetic_noise_sd": float(np.std(synthetic - _smooth(synthetic)))}
    return out


def _smooth(images: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    return ndimage.uniform_filter(images, size=(1, 3, 3))


def _mid_slices(real, vendor: str, k: int, rng) -> np.ndarray:
    lab = real.labelled()
    idx = np.flatnonzero((lab.vendors == vendor) & (lab.phases == "ED") & (np.abs(lab.slice_pos - 0.5) <= 0.25))
    subjects = sorted(set(lab.subject_ids[idx].tolist()))
    picked = []
    for s in rng.permutation(subjects)[:k]:  # one slice per patient
        picked.append(idx[lab.subject_ids[idx] == s][0])
    return np.array(picked, dtype=int)


def sample_grid(gen, real, path: Path, per_vendor: int = 4, seed: int = 0) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    lab = real.labelled()
    vendors = [v for v in lab.vendor_names if v in gen.vendors]
    rows = []
    for vendor in vendors:
        idx = _mid_slices(real, vendor, per_vendor, rng)
        masks = lab.labels[idx]
        synthetic = gen.sample(masks, vendor, seed=seed)
        rows.append((f"{vendor}: real", lab.images[idx], masks))
        rows.append((f"{vendor}: synthetic, same masks", synthetic, masks))
        if gen.mask_model is not None:
            stacks = gen.mask_model.sample(len(idx), seed=seed + 1, size=gen.image_size)
            new_masks = np.stack([s.labels["ED"][len(s.labels["ED"]) // 2] for s in stacks])
            rows.append((f"{vendor}: synthetic, new masks", gen.sample(new_masks, vendor, seed=seed), new_masks))
    cols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols + 1.6, 1.6 * len(rows)), squeeze=False)
    for r, (title, images, masks) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images):
                ax.axis("off")
                continue
            ax.imshow(images[c], cmap="gray", vmin=0, vmax=1)
            ax.contour(masks[c], levels=[0.5, 1.5, 2.5], colors=["#ffcc00", "#ff3333", "#33ccff"], linewidths=0.4)
        axes[r, 0].set_ylabel(title, fontsize=7)
    fig.suptitle(f"{gen.name}: real vs synthetic per vendor (internal: shows real patients)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    from cmri_release.io import read_cohort
    from cmri_release.preprocess import PreprocessConfig, cohort_to_slices
    from generators import load_generator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-vendor", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the intensity table here")
    args = parser.parse_args(argv)
    gen = load_generator(args.model)
    known = set(PreprocessConfig.__dataclass_fields__)
    real = cohort_to_slices(read_cohort(args.data), PreprocessConfig(**{k: v for k, v in gen.preprocess.items()
                                                                         if k in known}))
    sample_grid(gen, real, args.out, args.per_vendor, args.seed)
    table = intensity_table(gen, real, args.seed)
    print(f"{'vendor':10s} {'set':10s} " + " ".join(f"{s:>10s}" for s in STRUCTURES) + "   noise_sd")
    for vendor, entry in table.items():
        for which in ("real", "synthetic"):
            print(f"{vendor:10s} {which:10s} " + " ".join(f"{entry[which][s]:10.3f}" for s in STRUCTURES)
                  + f"   {entry[which + '_noise_sd']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
