"""Vendor mix: does every scanner vendor of the real cohort have its share of synthetic patients?

A cohort that drops a vendor (a generator whose vendor conditioning collapsed, or a synthesis that left one
out) can pass every other fidelity check: the texture checks and the discriminator compare each synthetic
vendor with the real patients of that vendor, and the pooled feature spaces barely move when a third of the
patients of one contrast are missing (measured: fresh phantom patients without one of three vendors passed the
whole fidelity group). A segmentation model trained on such a release has never seen that scanner.

Per vendor of the real cohort (train and holdout patients together: the population the release stands for),
the ratio of its synthetic share to its real share, counted in PATIENTS. Its interval is Katz's log interval for
a ratio of two binomial proportions (`scipy.stats.contingency.relative_risk`), 90% two-sided, i.e. each bound
one-sided at 95% like the other fidelity checks. Both shares are treated as samples, which is exact for a cohort
of real patients and conservative for a generated cohort whose vendor mix was allocated. Under 5 patients on a
side (a vendor with no synthetic patient among them, where the log interval is undefined) the bounds are exact
and conservative: Clopper-Pearson bounds of each share at half the error, the ratio of the opposite bounds. The check
takes the worst vendor (intersection-union: every vendor's lower bound must be inside the threshold).

Threshold 0.25 (a vendor at a quarter of its real share or less is shown starved): a cohort without a vendor
never passes at any threshold (its lower bound is 0) and fails once 0 patients prove it (upper bound 0.10 at 100
synthetic patients against a third of 200 real ones); at 0.25 a fresh sample of real patients, whose vendor mix
varies by chance, passes with probability 0.998 for a vendor of a fifth of the patients at 100 synthetic / 200
real (0.938 for a tenth), where 0.5 would block it 16 times in 100 (`plan_figures`, exact over the binomials).

A release that leaves a vendor out on purpose (`[synthesis] vendors`) fails this check; set its threshold to 0
in `[thresholds]` to release it anyway, and the datasheet's vendor table shows what was left out.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom, norm
from scipy.stats.contingency import relative_risk

from auditors.base import AuditContext, AuditResult, Auditor, register_auditor, worst_case
from auditors.privacy.mia_stats import clopper_pearson

from .resampling import decide_text

CHECK = "fidelity.vendor_share_ratio"
CONFIDENCE = 0.95  # each bound one-sided
KATZ_MIN_COUNT = 5  # patients on each side before the log-normal (Katz) interval is used
PLAN_SHARE = 0.2  # the planning model's smallest vendor share (a vendor of one patient in five)


def patient_counts(slices) -> dict[str, int]:
    """{vendor: patients}."""
    counts: dict[str, int] = {}
    for vendor in slices.subject_vendor().values():
        counts[vendor] = counts.get(vendor, 0) + 1
    return counts


def share_ratio(syn: int, n_syn: int, real: int, n_real: int, confidence: float = CONFIDENCE) -> tuple:
    """(estimate, lower, upper) of (syn / n_syn) / (real / n_real), each bound one-sided at `confidence`.

    Katz's log interval from KATZ_MIN_COUNT patients on each side; below it (where the log normal is a guess,
    and at 0 where it is undefined) the exact construction: each share's Clopper-Pearson bound at half the
    error (Bonferroni), the ratio of the opposite bounds. Wider, never narrower than it should be."""
    alpha = 1.0 - confidence
    estimate = (syn / n_syn) / (real / n_real) if real > 0 else math.inf
    if syn >= KATZ_MIN_COUNT and real >= KATZ_MIN_COUNT:
        ci = relative_risk(syn, n_syn, real, n_real).confidence_interval(confidence_level=1.0 - 2 * alpha)
        return float(estimate), float(ci.low), float(ci.high)
    (syn_low, syn_high), (real_low, real_high) = clopper_pearson(syn, n_syn, alpha / 2), clopper_pearson(real, n_real, alpha / 2)
    return float(estimate), syn_low / real_high, (syn_high / real_low if real_low > 0 else math.inf)


def vendor_ratios(synthetic_counts: dict[str, int], real_counts: dict[str, int]) -> dict[str, dict]:
    n_syn, n_real = sum(synthetic_counts.values()), sum(real_counts.values())
    out = {}
    for vendor in sorted(real_counts):
        syn = synthetic_counts.get(vendor, 0)
        estimate, lower, upper = share_ratio(syn, n_syn, real_counts[vendor], n_real)
        out[vendor] = {"synthetic_patients": syn, "real_patients": real_counts[vendor],
                       "synthetic_share": syn / n_syn if n_syn else math.nan,
                       "real_share": real_counts[vendor] / n_real, "ratio": estimate, "lower": lower, "upper": upper}
    return out


def katz_lower(a: np.ndarray, n1: int, c: np.ndarray, n2: int, confidence: float = CONFIDENCE) -> np.ndarray:
    """Katz's lower bound of (a / n1) / (c / n2), vectorised: `relative_risk`'s formula. Under KATZ_MIN_COUNT
    on a side: 0 (the plan then counts the exact, wider bound of `share_ratio` as a miss: a little pessimistic)."""
    a, c = np.asarray(a, float), np.asarray(c, float)
    ok = (a >= KATZ_MIN_COUNT) & (c >= KATZ_MIN_COUNT)
    sa, sc = np.where(ok, a, 1.0), np.where(ok, c, 1.0)
    log_rr = np.log(sa / n1) - np.log(sc / n2)
    se = np.sqrt(1 / sa - 1 / n1 + 1 / sc - 1 / n2)
    return np.where(ok, np.exp(log_rr - norm.ppf(confidence) * se), 0.0)


def plan_figures(n_syn: int, n_real: int, threshold: float, share: float = PLAN_SHARE) -> dict:
    """For one vendor of this share, both sides binomial: the exact chance that its lower bound reaches the
    threshold (summed over the likely counts), and the normal model's smallest ratio failed with 80%."""
    if threshold <= 0:
        return {"honest_pass_probability": 1.0}
    if n_syn < 1 or n_real < 1:
        return {"honest_pass_probability": 0.0}
    counts = []
    for n in (n_syn, n_real):
        k = np.arange(int(binom.ppf(1e-6, n, share)), int(binom.ppf(1 - 1e-6, n, share)) + 1)
        counts.append((k, binom.pmf(k, n, share)))
    (a, pa), (c, pc) = counts
    passes = katz_lower(a[:, None], n_syn, c[None, :], n_real) >= threshold
    se = math.sqrt((1 - share) / (share * n_syn) + (1 - share) / (share * n_real))
    return {"honest_pass_probability": float(min(1.0, pa @ passes @ pc)),
            "smallest_detectable": float(threshold * math.exp(-(norm.ppf(CONFIDENCE) + norm.ppf(0.8)) * se)),
            "detectable_unit": f"synthetic over real share of a vendor holding {share:.0%} of the real patients"}


@register_auditor
class VendorMixAuditor(Auditor):
    name = "vendor_mix"
    group = "fidelity"
    default_thresholds = {
        CHECK: (0.25, ">=", "for the worst vendor, its share of the synthetic patients over its share of the real "
                           "(train and holdout) patients: a vendor left out or starved"),
    }

    def plan(self, sizes, thresholds, seed: int = 0) -> dict:
        return {CHECK: plan_figures(sizes.synthetic, sizes.train + sizes.holdout,
                                    float(thresholds.get(CHECK, self.default_thresholds[CHECK][0])))}

    def run(self, ctx: AuditContext) -> AuditResult:
        real = patient_counts(ctx.train)
        for vendor, n in patient_counts(ctx.holdout).items():
            real[vendor] = real.get(vendor, 0) + n
        synthetic = patient_counts(ctx.synthetic)
        ratios = vendor_ratios(synthetic, real)
        foreign = sorted(set(synthetic) - set(real))
        label, estimate, lower, upper = worst_case(
            [(v, r["ratio"], r["lower"], r["upper"]) for v, r in ratios.items()], ">=")
        threshold = ctx.threshold(CHECK, self.default_thresholds[CHECK][0])
        n_syn, n_real = sum(synthetic.values()), sum(real.values())
        check = self.check(
            ctx, CHECK, estimate, lower=lower, upper=upper, confidence=CONFIDENCE,
            details=f"worst vendor {label}: {ratios[label]['synthetic_patients']} of {n_syn} synthetic patients "
                    f"({ratios[label]['synthetic_share']:.0%}) against {ratios[label]['real_patients']} of {n_real} "
                    "real (" + f"{ratios[label]['real_share']:.0%}); by vendor " +
                    ", ".join(f"{v} {r['ratio']:.2f}" for v, r in ratios.items()) +
                    (f"; synthetic vendors with no real patient: {', '.join(foreign)}" if foreign else ""),
            decide=decide_text(estimate, lower, upper, threshold, ">=", min(n_syn, n_real)),
            plan=plan_figures(n_syn, n_real, threshold, min(r["real_share"] for r in ratios.values())))
        return AuditResult(self.name, self.group, metrics={"by_vendor": ratios, "synthetic_only_vendors": foreign,
                                                           "patients": {"synthetic": n_syn, "real": n_real}},
                           checks=[check])
