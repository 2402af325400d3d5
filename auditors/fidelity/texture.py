"""Texture, spectrum and spatial structure per structure: synthetic vs train over real holdout vs train.

Each patient (synthetic or holdout) is summarised by the mean of its slices' texture features
(auditors.features.texture), standardised with train's patients of the same vendor (their mean and
their between-patient spread). A patient's distance to the real population is the mean squared
z-score over one family of features; the check is the mean distance of synthetic patients over that
of real holdout patients: about 1 for a generator as close to the population as new patients are,
far above for noise, blur, blotches or scrambled structure. Patients, not pooled sets, are compared,
as for intensities: a patient's distance to the population is a steady yardstick, where the distance
between two large pooled sets shrinks to sampling noise and makes ratios unstable.

- `texture_ratio`: fine-residual noise and gradient magnitude in blood pool, myocardium and the
  background ring around the heart;
- `spectrum_ratio`: radially averaged power spectra of the slice and of the heart with its
  surroundings;
- `structure_texture_ratio`: inside each structure, mean, spread, smooth (blotch-scale) spread and
  neighbour correlations: a "label painter" that draws each pixel from train's intensities for its
  label matches the marginals but not the spatial structure, and fails it.
"""
from __future__ import annotations

import numpy as np

from auditors.base import AuditContext, AuditResult, Auditor, Figure, register_auditor
from auditors.features.texture import SPECTRUM_BANDS, get_texture_space, texture_features

from . import plots
from .resampling import planned, decide_text, patient_index, planning, ratio_of_means, relative_se

CHECKS = {"texture_ratio": ("noise", "gradient"), "spectrum_ratio": ("spectrum",),
          "structure_texture_ratio": ("structure",)}
BOOTSTRAP_OPTION = "fidelity_bootstrap"  # declared by feature_distance; shared by every fidelity interval


def patient_means(features: np.ndarray, subject_ids) -> tuple[np.ndarray, np.ndarray]:
    """(patients, (P, D) nan-mean of each patient's slices)."""
    ids, rank = patient_index(subject_ids)
    out = np.full((len(ids), features.shape[1]), np.nan)
    for p in range(len(ids)):
        rows = features[rank == p]
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(rows).any(axis=0)
            out[p, ok] = np.nanmean(rows[:, ok], axis=0)
    return ids, out


def vendor_reference(means: np.ndarray, vendors: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{vendor: (mean, between-patient sd)} of train patients' feature means."""
    out = {}
    for v in np.unique(vendors):
        m = means[vendors == v]
        if len(m) < 2:
            raise ValueError(f"vendor {v!r} has {len(m)} training patient(s); texture needs at least 2 per vendor")
        mu, sd = np.nanmean(m, axis=0), np.nanstd(m, axis=0, ddof=1)
        out[str(v)] = (mu, np.where(np.isfinite(sd) & (sd > 1e-9), sd, np.nan))
    return out


def patient_distances(means: np.ndarray, vendors: np.ndarray, reference: dict, columns: np.ndarray) -> np.ndarray:
    """Mean squared z-score to train's patients of the same vendor, over `columns` (NaN: unmeasurable)."""
    out = np.full(len(means), np.nan)
    for i, (row, v) in enumerate(zip(means, vendors)):
        if str(v) not in reference:
            continue
        mu, sd = reference[str(v)]
        z2 = ((row[columns] - mu[columns]) / sd[columns]) ** 2
        if np.isfinite(z2).any():
            out[i] = np.nanmean(z2)
    return out


def _vendors_of(slices, ids) -> np.ndarray:
    vendor = slices.subject_vendor()
    return np.array([vendor[s] for s in ids])


def texture_report(ctx: AuditContext, replicates: int) -> dict:
    space = get_texture_space(ctx)
    per_split = {}
    for split in ("train", "holdout", "synthetic"):
        slices = getattr(ctx, split).labelled()
        if len(slices) == 0:
            raise ValueError(f"the {split} slices carry no label maps: texture is read per structure")
        ids, means = patient_means(texture_features(ctx, split)[getattr(ctx, split).has_label],
                                   slices.subject_ids)
        per_split[split] = (ids, means, _vendors_of(slices, ids))
    reference = vendor_reference(per_split["train"][1], per_split["train"][2])
    missing = sorted(set(per_split["synthetic"][2]) - set(reference))
    if missing:
        raise ValueError(f"synthetic vendor(s) {', '.join(missing)} have no training patients to compare with")
    rng = np.random.default_rng([ctx.seed, 15])
    out = {"space": space.describe(), "checks": {}}
    for check, families in CHECKS.items():
        cols = np.concatenate([space.family_index(f) for f in families])
        d = {s: patient_distances(per_split[s][1], per_split[s][2], reference, cols) for s in ("holdout", "synthetic")}
        syn, real = d["synthetic"], d["holdout"]
        res = ratio_of_means(syn[np.isfinite(syn)], real[np.isfinite(real)], replicates, rng)
        by_vendor = {}
        for v in sorted(reference):
            sv, rv = syn[per_split["synthetic"][2] == v], real[per_split["holdout"][2] == v]
            sv, rv = sv[np.isfinite(sv)], rv[np.isfinite(rv)]
            if len(sv) >= 2 and len(rv) >= 2:
                by_vendor[v] = ratio_of_means(sv, rv, replicates, rng)
        # Which features drive the distance: the mean z-score of synthetic patients per feature.
        z_mean = {}
        for j in cols:
            zs = [(row[j] - reference[str(v)][0][j]) / reference[str(v)][1][j]
                  for row, v in zip(per_split["synthetic"][1], per_split["synthetic"][2])]
            z_mean[space.names[j]] = float(np.nanmean(zs)) if np.isfinite(zs).any() else None
        res.update(families=list(families), by_vendor=by_vendor, synthetic_mean_z=z_mean)
        out["checks"][check] = res
    out["spectra"] = _mean_spectra(ctx, space)
    return out


def _mean_spectra(ctx, space) -> dict:
    """{vendor: {split: (bands,) mean relative log power of the heart window}} for the figure and the report."""
    cols = [space.names.index(f"spectrum.heart.band{b}") for b in range(SPECTRUM_BANDS)]
    out = {}
    for vendor in ctx.synthetic.vendor_names:
        out[vendor] = {}
        for split in ("train", "holdout", "synthetic"):
            s = getattr(ctx, split)
            sel = s.has_label & (s.vendors == vendor)
            if sel.any():
                out[vendor][split] = np.nanmean(texture_features(ctx, split)[sel][:, cols], axis=0).tolist()
    return out


@register_auditor
class TextureAuditor(Auditor):
    name = "texture"
    group = "fidelity"
    default_thresholds = {
        "fidelity.texture_ratio": (1.6, "<=", "noise and gradient statistics in blood pool, myocardium and the ring "
                                              "around the heart: mean distance of a synthetic patient to train's "
                                              "patients (same vendor) over the same for real holdout patients"),
        "fidelity.spectrum_ratio": (1.6, "<=", "radially averaged power spectrum of the slice and of the heart with "
                                               "its surroundings, synthetic patients' distance to train over real "
                                               "holdout patients'"),
        "fidelity.structure_texture_ratio": (1.6, "<=", "spatial structure inside each structure (mean, spread, "
                                                        "blotch-scale spread, neighbour correlation at 1 and 2 px): "
                                                        "synthetic patients' distance to train over real holdout "
                                                        "patients'; a label painter fails it"),
    }

    def plan(self, sizes, thresholds, seed: int = 0) -> dict:
        """Planning from the law of the bound measured on the phantom (resampling.BOUND_AT_100), scaled to the sizes."""
        return {name: planned(name, sizes.synthetic, sizes.holdout, 1.0, float(thresholds.get(name, default)), op)
                for name, (default, op, _) in self.default_thresholds.items()}

    def run(self, ctx: AuditContext) -> AuditResult:
        replicates = ctx.option(BOOTSTRAP_OPTION)
        report = texture_report(ctx, replicates)
        checks = []
        for short, res in report["checks"].items():
            name = f"fidelity.{short}"
            threshold = ctx.threshold(name, self.default_thresholds[name][0])
            worst = sorted(((v, z) for v, z in res["synthetic_mean_z"].items() if z is not None),
                           key=lambda kv: -abs(kv[1]))[:3]
            details = (f"mean patient distance {res['synthetic_mean']:.3g} (synthetic, {res['patients']['synthetic']} "
                       f"patients) / {res['real_mean']:.3g} (holdout, {res['patients']['real']}); "
                       f"{replicates} patient bootstraps; by vendor " +
                       ", ".join(f"{v} {r['estimate']:.2f}" for v, r in res["by_vendor"].items()) +
                       "; largest mean z: " + ", ".join(f"{n} {z:+.1f}" for n, z in worst))
            n = min(res["patients"].values())
            checks.append(self.check(ctx, name, res["estimate"], lower=res["lower"], upper=res["upper"],
                                     confidence=res["confidence"], details=details,
                                     decide=decide_text(res["estimate"], res["lower"], res["upper"], threshold,
                                                        "<=", n),
                                     plan=planning(relative_se(res), 1.0, threshold, "<=")))
        png = plots.spectra(report["spectra"], "Radially averaged power spectrum of the heart and its surroundings")
        fig = Figure(name="fidelity_spectra", title="Power spectra per vendor", png=png, public=True,
                     caption="Mean relative log power per radial frequency band (0: lowest, "
                             f"{SPECTRUM_BANDS - 1}: Nyquist); aggregate statistics, no image.")
        return AuditResult(self.name, self.group, metrics=report, checks=checks,
                           figures=[fig, side_by_side_figure(ctx.holdout, ctx.synthetic, ctx.seed)])


def side_by_side_figure(real, synthetic, seed: int, per_row: int = 6) -> Figure:
    """Per vendor, synthetic slices over the real holdout slices nearest in phase and level: INTERNAL (real images)."""
    rng = np.random.default_rng([seed, 19])
    images, labels = {}, {}
    for vendor in synthetic.vendor_names:
        syn_idx = np.flatnonzero((synthetic.vendors == vendor) & synthetic.has_label)
        real_idx = np.flatnonzero((real.vendors == vendor) & real.has_label)
        if len(syn_idx) == 0 or len(real_idx) == 0:
            continue
        syn_idx = np.sort(rng.choice(syn_idx, size=min(per_row, len(syn_idx)), replace=False))
        match = [real_idx[np.argmin(np.abs(real.slice_pos[real_idx] - synthetic.slice_pos[i]) +
                                    (real.phases[real_idx] != synthetic.phases[i]))] for i in syn_idx]
        images[f"{vendor} synthetic"], labels[f"{vendor} synthetic"] = synthetic.images[syn_idx], synthetic.labels[syn_idx]
        images[f"{vendor} real"], labels[f"{vendor} real"] = real.images[match], real.labels[match]
    png = plots.sample_grid(images, labels, "Synthetic slices above real holdout slices of the same vendor, phase "
                                            "and level, with label contours")
    return Figure(name="fidelity_side_by_side", title="Real and synthetic side by side (internal)", png=png,
                  public=False, caption="Real patients' images: internal report only. Outlines: RV blue, MYO green, "
                                        "LV red.")
