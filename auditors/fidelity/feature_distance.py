"""Frechet distance and KID in learned feature spaces, against the real-vs-real baseline.

FID's ImageNet Inception is neither available offline nor a judge of cardiac MRI, so the
distances are taken in the project's own spaces (the segmenter's encoder; the self-supervised
embedding), standardised with train's features. What is gated is the EXCESS
(FD(synthetic, train) - FD(holdout, train)) / tr(cov(train)) at the same number of slices: about 0
for a generator as close to the patients as new real patients are, above 0 otherwise. Both FDs carry
the same small-sample bias, which cancels in the difference, and the scale (train's total feature
variance, the feature dimension after standardisation) does not depend on the cohort, so an honest
excess and its interval shrink towards 0 as the cohort grows while a fault's excess stays. The ratio
FD(synthetic, train) / FD(holdout, train), gated until 2026-12-04, is still reported: its
denominator shrinks with the cohort together with its noise, so its interval never narrowed
(honest intervals up to [0.36, 3.46] at 100 patients). Intervals come from a bootstrap over
subjects of both the synthetic and the holdout sets.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np
from tqdm.auto import tqdm

from auditors.base import AuditContext, AuditResult, Auditor, Option, register_auditor

from .distances import (frechet_from_stats, frechet_to_reference, matched_sample, mean_cov, mmd2_from_kernels,
                        multiplicities, percentile_interval, polynomial_kernel, subject_groups, weighted_kid,
                        weighted_mean_cov)
from .resampling import bias_aware_bounds, decide_text, planned, planning
from .spaces import available_spaces, matched_indices, standardised

DEFAULT_BOOTSTRAP = 200
FD_EXCESS_THRESHOLD = 0.03  # docs/fidelity-utility-checks.md: never looser than the old ratio on a measured fault
KID_REFERENCE_MAX = 2000  # train slices in KID's reference sample (its cost is quadratic)


class _Reference:
    """Train statistics computed once: Gaussian moments for FD, a kernel sample for KID."""

    def __init__(self, train: np.ndarray, rng: np.random.Generator):
        self.mu, self.cov = mean_cov(train)
        keep = rng.choice(len(train), size=min(len(train), KID_REFERENCE_MAX), replace=False)
        self.kid_sample = train[np.sort(keep)]
        self.k_ref = polynomial_kernel(self.kid_sample, self.kid_sample)
        self._fd_to_ref = frechet_to_reference(self.mu, self.cov)

    def fd(self, x: np.ndarray) -> float:
        return frechet_from_stats(*mean_cov(x), self.mu, self.cov)

    def kid(self, x: np.ndarray) -> float:
        return mmd2_from_kernels(polynomial_kernel(x, x), self.k_ref, polynomial_kernel(x, self.kid_sample))

    def replicates(self, x: np.ndarray, weights: np.ndarray, groups: list[np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(FD, KID) to train of every sample given as per-row multiplicities of `x` (R, N), `groups` its rows per
        subject: the same values as `fd(x[idx])` and `kid(x[idx])`, from weighted moments and kernel sums."""
        if not len(weights):
            return np.zeros(0), np.zeros(0)
        means, covs = weighted_mean_cov(x, weights, groups)
        fd = np.array([self._fd_to_ref(mu, cov) for mu, cov in zip(means, covs)])
        return fd, weighted_kid(x, weights, self.kid_sample, self.k_ref)


def _ratio(a, b):
    return float(a / b) if b > 0 else float("nan")


DEFAULT_NETWORKS = 3  # docs/fidelity-utility-checks.md: one network's seed moved a fault's excess 0.028-0.089
T_DRAWS = 20
NETWORK_SEED_STEP = 7919  # member j's networks are seeded seed + j * this (a prime: no overlap with nearby seeds)


def network_member(ctx, j: int):
    """An audit context like `ctx` but seeded for the j-th extra network of each learned space, with a cache of its
    own (its segmenter and embedding are trained on the same real train patients), built once per audit."""
    return ctx.shared(f"fidelity.network_member.{j}",
                      lambda: replace(ctx, seed=int(ctx.seed) + NETWORK_SEED_STEP * int(j), cache={}))


def member_features(ctx, space: str, networks: int) -> list[dict[str, np.ndarray]]:
    """The standardised features of `space` under networks 1 .. networks - 1, trained side by side, one CPU thread
    each (the audit's own segmenter trains on one thread: the second core is idle then; on one thread each the
    members' figures do not depend on the machine's thread count either). Local threads whatever the audit's
    executor: the jobs are closures over the audit context, and small."""
    from auditors.segmentation.parallel import map_jobs, one_thread

    members = [network_member(ctx, j) for j in range(1, networks)]

    def build(member):
        with one_thread() if str(ctx.device).startswith("cpu") else contextlib.nullcontext():
            return standardised(member, space)

    return map_jobs(build, members, device=ctx.device, quiet=ctx.quiet, desc=f"{space} networks")


MAX_SYNTHETIC_PARTS = 4  # synthetic slices used by the FD: at most this many holdout-sized parts


def synthetic_parts(groups: list[np.ndarray], n: int, order: np.ndarray, parts: int) -> list[list[int]]:
    """Up to `parts` disjoint sets of subjects (indices into `groups`), taken in `order`, each of at least `n`
    slices."""
    out, picked, total = [], [], 0
    for k in order:
        picked.append(int(k))
        total += len(groups[k])
        if total >= n:
            out.append(picked)
            picked, total = [], 0
            if len(out) == parts:
                break
    return out


def part_count(groups: list[np.ndarray], n: int) -> int:
    """Holdout-sized parts the synthetic set could fill (1 when it is not larger); a draw may fill fewer."""
    return int(max(1, min(MAX_SYNTHETIC_PARTS, sum(len(g) for g in groups) // max(n, 1))))


def compare_in_space(ctx, space: str, bootstrap: int, networks: int = 1) -> dict:
    """FD and KID of the synthetic and holdout sets to train at the holdout's slice count, with bootstrap bounds.

    FD carries a small-sample bias that depends on the slice count, so the synthetic set is measured at the
    holdout's count. A synthetic set several times larger is split into up to MAX_SYNTHETIC_PARTS disjoint
    holdout-sized parts of whole patients and its figures are their mean: the bias stays matched and the extra
    patients narrow the interval. A bootstrap replicate resamples each part within its own patients, as the
    holdout is resampled; with one part it is the holdout-sized draw of before.

    With `networks` > 1 the gated FD excess is averaged over that many independently seeded networks of the space
    (`network_member`), measured on the same samples, and its replicates carry the networks' spread as well as
    the patients': each is the replicate's mean over networks plus the between-network standard error times a
    Student t draw with networks - 1 degrees of freedom (a spread estimated from few networks is itself uncertain);
    the lower bound is never below the smallest of the networks' own lower bounds (a fault that every network shows
    is shown). The other figures (ratio, KID) stay those of the audit's own network."""
    feats = standardised(ctx, space)
    rng = np.random.default_rng([ctx.seed, 7])
    ref = _Reference(feats["train"], rng)
    idx = matched_indices(ctx)
    groups = {s: subject_groups(getattr(ctx, s).subject_ids) for s in ("holdout", "synthetic")}
    n = len(idx["holdout"])
    parts = part_count(groups["synthetic"], n)
    subjects = [] if parts == 1 else synthetic_parts(groups["synthetic"], n, np.random.default_rng(
        [ctx.seed, 7, 1]).permutation(len(groups["synthetic"])), parts)
    part_groups = [[groups["synthetic"][k] for k in ks] for ks in subjects]
    point_parts = [idx["synthetic"]] if parts == 1 else [np.concatenate(g)[:n] for g in part_groups]
    draws = {"holdout": [], "synthetic": []}
    for _ in tqdm(range(bootstrap), desc=f"FD/KID bootstrap ({space})", disable=ctx.quiet, leave=False):
        draws["holdout"].append(matched_sample(groups["holdout"], n, rng, replace=True))
        # each part resampled within its own patients, as the holdout is: the parts are independent samples, and
        # a replicate's repeated patients then shrink the synthetic FD as they shrink the holdout's (the bias
        # that the difference cancels)
        draws["synthetic"].append([matched_sample(g, n, rng, replace=True)
                                   for g in (part_groups or [groups["synthetic"]])])
    # Every sample (the matched one of the point estimate first, then the bootstrap replicates) is a multiset of
    # the set's slices: its FD and KID follow exactly from per-slice multiplicities, one pass over the set.
    holdout_weights = multiplicities([idx["holdout"]] + draws["holdout"], len(feats["holdout"]))
    samples = [point_parts] + draws["synthetic"]
    flat = [part for sample in samples for part in sample]
    owner = np.repeat(np.arange(len(samples)), [len(sample) for sample in samples])
    synthetic_weights = multiplicities(flat, len(feats["synthetic"]))
    count = np.bincount(owner)

    def measure(feats, ref):
        """{set: (FD, KID) of the point sample then of each replicate} in one space's features."""
        per_set = {"holdout": ref.replicates(feats["holdout"], holdout_weights, groups["holdout"])}
        fd_parts, kid_parts = ref.replicates(feats["synthetic"], synthetic_weights, groups["synthetic"])
        per_set["synthetic"] = (np.bincount(owner, fd_parts) / count, np.bincount(owner, kid_parts) / count)
        return per_set

    per_set = measure(feats, ref)
    point = {name: (float(per_set["synthetic"][k][0]), float(per_set["holdout"][k][0]))
             for k, name in enumerate(("fd", "kid"))}
    reps = {name: list(zip(per_set["synthetic"][k][1:], per_set["holdout"][k][1:]))
            for k, name in enumerate(("fd", "kid"))}
    out = {"slices_per_set": n, "synthetic_parts": len(point_parts), "dim": int(feats["train"].shape[1]),
           "bootstrap": bootstrap}
    for name, (s, b) in point.items():
        r = np.asarray(reps[name]) if bootstrap else np.zeros((0, 2))
        out[name] = {"synthetic_vs_train": s, "holdout_vs_train": b,
                     "synthetic_ci95": percentile_interval(r[:, 0]), "holdout_ci95": percentile_interval(r[:, 1])}
    out["fd"]["ratio"] = _ratio(*point["fd"])
    ratio_reps = [_ratio(s, b) for s, b in reps["fd"]]
    out["fd"]["ratio_ci95"] = percentile_interval(ratio_reps)
    # one-sided 95% each, what the check gates on; bias-aware: the bootstrap of an FD ratio runs low
    out["fd"]["ratio_bounds"] = list(bias_aware_bounds(out["fd"]["ratio"], ratio_reps))
    out["fd"]["ratio_se"] = float(np.nanstd(ratio_reps)) if bootstrap else float("nan")
    # What the check gates on: the excess over the real baseline on a fixed scale (train's total feature variance).
    # Unlike the ratio, whose denominator shrinks with the cohort together with its noise, an honest excess and its
    # spread both go to 0 as the cohort grows while a fault's excess stays.
    scale = float(np.trace(ref.cov))
    excess_reps = [(s - b) / scale for s, b in reps["fd"]] if scale > 0 else []
    out["fd"]["train_total_variance"] = scale
    out["fd"]["excess"] = (point["fd"][0] - point["fd"][1]) / scale if scale > 0 else float("nan")
    out["fd"]["excess_bounds"] = (list(bias_aware_bounds(out["fd"]["excess"], excess_reps)) if excess_reps
                                  else [float("nan"), float("nan")])
    out["fd"]["excess_se"] = float(np.nanstd(excess_reps)) if excess_reps else float("nan")
    if networks > 1 and excess_reps:
        excess = [out["fd"]["excess"]]
        replicates = [np.asarray(excess_reps)]
        for j, member_feats in enumerate(member_features(ctx, space, networks), start=1):
            member_ref = _Reference(member_feats["train"], np.random.default_rng([ctx.seed, 7, 2, j]))
            member_scale = float(np.trace(member_ref.cov))
            fd_syn, fd_hold = (measure(member_feats, member_ref)[s][0] for s in ("synthetic", "holdout"))
            excess.append((fd_syn[0] - fd_hold[0]) / member_scale)
            replicates.append((fd_syn[1:] - fd_hold[1:]) / member_scale)
        excess, replicates = np.asarray(excess), np.stack(replicates)
        between = float(excess.std(ddof=1) / np.sqrt(networks))
        patients = replicates.mean(axis=0)  # the patient bootstrap of the networks' mean excess
        # T_DRAWS Student t draws per replicate: the t's heavy tails (2 degrees of freedom at 3 networks) need more
        # than one draw per replicate for stable 95% bounds
        t = np.random.default_rng([ctx.seed, 7, 3]).standard_t(networks - 1, size=(len(patients), T_DRAWS))
        combined = (patients[:, None] + between * t).ravel()
        out["fd"]["excess_per_network"] = excess.tolist()
        out["fd"]["excess_network_se"] = between
        out["fd"]["excess"] = float(excess.mean())
        lower, upper = bias_aware_bounds(out["fd"]["excess"], combined)
        # Networks that all show a fault disagree only on how large it is, and the t term can then reach below the
        # threshold for a fault every network sees far above it: the lower bound is at least the smallest of the
        # networks' own lower bounds (only the FAIL side moves; the upper bound, which a pass needs, does not)
        own_lower = min(bias_aware_bounds(e, r)[0] for e, r in zip(excess, replicates))
        out["fd"]["excess_bounds"] = [float(max(lower, own_lower)) if np.isfinite(own_lower) else lower, upper]
        # a t with 2 degrees of freedom has no variance: the standard error (for planning) adds the two parts
        out["fd"]["excess_se"] = float(np.sqrt(np.nanvar(patients) + between ** 2))
    # KID is unbiased: between two real samples it is about 0 and may be negative, so its ratio
    # is unstable; the excess over the baseline is the readable figure (ratio given when defined).
    kid_s, kid_b = point["kid"]
    out["kid"]["excess"] = kid_s - kid_b
    out["kid"]["excess_ci95"] = percentile_interval([s - b for s, b in reps["kid"]])
    out["kid"]["ratio"] = _ratio(kid_s, kid_b) if out["kid"]["holdout_ci95"][0] > 0 else None
    return out


@register_auditor
class FeatureDistanceAuditor(Auditor):
    name = "feature_distance"
    options = (Option("fidelity_bootstrap", int, DEFAULT_BOOTSTRAP, "patient resamples for the distance intervals",
                      low=10, high=100000),
               Option("fidelity_networks", int, DEFAULT_NETWORKS, "independently seeded networks per learned "
                      "space for the FD excess: their mean is gated, its interval carries their spread as well as the "
                      "patients'", low=1, high=10))
    group = "fidelity"
    default_thresholds = {
        "fidelity.fd_excess_segmenter": (FD_EXCESS_THRESHOLD, "<=", "Frechet distance to train in the segmenter's "
                                         "encoder features, synthetic minus real holdout (same slice count), as a "
                                         "share of train's total feature variance"),
        "fidelity.fd_excess_embedding": (FD_EXCESS_THRESHOLD, "<=", "Frechet distance to train in the "
                                         "self-supervised embedding, synthetic minus real holdout (same slice "
                                         "count), as a share of train's total feature variance"),
    }

    def plan(self, sizes, thresholds, seed: int = 0) -> dict:
        """Planning from the law of the bound measured on the phantom (resampling.BOUND_AT_100), scaled to the sizes:
        an honest excess is 0."""
        used = min(sizes.synthetic, MAX_SYNTHETIC_PARTS * sizes.holdout)  # synthetic patients beyond the parts idle
        return {name: planned(name, used, sizes.holdout, 0.0, float(thresholds.get(name, default)), op)
                for name, (default, op, _) in self.default_thresholds.items()}

    def run(self, ctx: AuditContext) -> AuditResult:
        bootstrap = ctx.option("fidelity_bootstrap")
        results, checks = {}, []
        for space in available_spaces():
            res = compare_in_space(ctx, space, bootstrap, ctx.option("fidelity_networks"))
            results[space] = res
            fd = res["fd"]
            lo, hi = fd["excess_bounds"]
            name, est = f"fidelity.fd_excess_{space}", fd["excess"]
            threshold = ctx.threshold(name, self.default_thresholds[name][0])
            n = min(len(ctx.synthetic.subjects), len(ctx.holdout.subjects))
            r_lo, r_hi = fd["ratio_bounds"]
            checks.append(self.check(ctx, name, est, lower=lo, upper=hi, confidence=0.95,
                                     decide=decide_text(est, lo, hi, threshold, "<=", n),
                                     plan=planning(fd["excess_se"], 0.0, threshold, "<="),
                                     details=f"FD {fd['synthetic_vs_train']:.3g} vs baseline {fd['holdout_vs_train']:.3g} "
                                     f"(train's total variance {fd['train_total_variance']:.3g}); excess one-sided 95% "
                                     f"bounds [{lo:.3g}, {hi:.3g}] over {bootstrap} subject bootstraps"
                                     + (f" and {len(fd['excess_per_network'])} networks (excess per network "
                                        f"{', '.join(f'{e:.3g}' for e in fd['excess_per_network'])}; their "
                                        f"standard error {fd['excess_network_se']:.3g})"
                                        if "excess_per_network" in fd else "") + "; "
                                     f"{res['slices_per_set']} slices per set; reported: ratio {fd['ratio']:.3g} "
                                     f"[{r_lo:.2f}, {r_hi:.2f}], KID excess over the real baseline "
                                     f"{res['kid']['excess']:.3g} (95% CI {res['kid']['excess_ci95'][0]:.3g} to "
                                     f"{res['kid']['excess_ci95'][1]:.3g})"))
        return AuditResult(self.name, self.group, metrics={"spaces": results}, checks=checks)
