"""The fidelity checks on tiny cohorts: a perfect generator (unseen real patients) fails no check (6 patients a
side are too few to show every check inside its threshold: some are inconclusive, as they must be), and the
classic faults and the four degradations FAIL the checks that guard against them, shown by their bounds."""
import numpy as np
import pytest

from auditors.base import AuditContext, Verdict, auditors_in
from auditors.fidelity.degradations import degrade
from auditors.fidelity.feature_distance import DEFAULT_NETWORKS, network_member
from auditors.fidelity.mask_consistency import MaskConsistencyAuditor
from auditors.runner import run_auditors, verdict

# 144 segmenter steps on 12 tiny patients (96 slices, batch 8); a short embedding; a short bootstrap.
OPTIONS = {"utility_epochs": 12, "embedding_steps": 40, "fidelity_bootstrap": 100}
DEGRADATIONS = ("noise", "blur", "blotches", "shuffle")  # auditors.fidelity.degradations


def _real_only(cache: dict) -> dict:
    return {k: v for k, v in cache.items() if "synthetic" not in k and not k.startswith("fidelity.")}


class _Audits(dict):
    """kind -> ({check name: Check}, {auditor: AuditResult}), each kind audited on first use (the default run
    reads only some of them); the real-data models are trained once and shared."""

    def __init__(self, heart_splits, make_faulty):
        super().__init__()
        self.splits, self.make_faulty, self.shared, self.members = heart_splits, make_faulty, {}, {}

    def __missing__(self, kind):
        splits = self.splits
        syn = degrade(splits["synthetic"], kind.split("_", 1)[1]) if kind.startswith("degraded_") else \
            self.make_faulty(kind, splits["synthetic"])
        ctx = AuditContext(train=splits["train"], holdout=splits["holdout"],
                           synthetic=syn, test=splits["test"], options=OPTIONS, quiet=True)
        # What depends only on real data is reused (the audit's networks and the FD's extra networks);
        # anything computed from the synthetic set is not.
        ctx.cache.update(_real_only(self.shared))
        for j, member_cache in self.members.items():
            network_member(ctx, j).cache.update(member_cache)
        results = run_auditors(ctx, ["fidelity"])
        self.shared.update(ctx.cache)
        self.members = {j: _real_only(network_member(ctx, j).cache) for j in range(1, DEFAULT_NETWORKS)}
        self[kind] = ({c.name: c for r in results for c in r.checks}, {r.auditor: r for r in results})
        return self[kind]


@pytest.fixture(scope="module")
def audits(heart_splits, make_faulty):
    return _Audits(heart_splits, make_faulty)


def test_a_perfect_generator_fails_no_fidelity_check(audits):
    checks, results = audits["good"]
    assert all(r.error is None for r in results.values()), {k: r.error for k, r in results.items()}
    assert set(results) == set(auditors_in(["fidelity"]))
    failed = {n: (c.value, c.lower, c.upper, c.threshold) for n, c in checks.items() if c.verdict is Verdict.FAIL}
    assert not failed
    assert verdict(list(results.values())) in ("pass", "inconclusive")
    for c in checks.values():  # every check carries an interval, and an undecided one says what would decide it
        assert c.lower is not None and c.upper is not None and c.lower <= c.upper, c
        if c.verdict is Verdict.INCONCLUSIVE:
            assert "patients" in c.decide
    assert {"fidelity.discriminator_auc", "fidelity.texture_ratio", "fidelity.spectrum_ratio",
            "fidelity.structure_texture_ratio"} <= set(checks)
    assert {"fidelity.mask_dice_ratio", "fidelity.segmenter_real_dice", "fidelity.fd_excess_segmenter",
            "fidelity.fd_excess_embedding", "fidelity.precision_ratio", "fidelity.coverage_ratio",
            "fidelity.diversity_ratio", "fidelity.intensity_w1_ratio"} <= set(checks)


@pytest.mark.parametrize("kind,must_fail", [
    ("shuffled_labels", {"fidelity.mask_dice_ratio", "fidelity.intensity_w1_ratio"}),
    ("mode_collapse", {"fidelity.diversity_ratio", "fidelity.coverage_ratio", "fidelity.fd_excess_segmenter",
                       "fidelity.fd_excess_embedding"}),
    ("noise", {"fidelity.mask_dice_ratio", "fidelity.fd_excess_segmenter", "fidelity.fd_excess_embedding",
               "fidelity.precision_ratio", "fidelity.coverage_ratio", "fidelity.intensity_w1_ratio"}),
])
def test_each_fault_fails_the_checks_that_guard_against_it(audits, kind, must_fail):
    checks, results = audits[kind]
    assert all(r.error is None for r in results.values())
    passed_anyway = {n: (checks[n].value, checks[n].verdict) for n in must_fail if checks[n].verdict is not Verdict.FAIL}
    assert not passed_anyway
    assert verdict(list(results.values())) == "fail"
    # The segmenter is the same instrument for every kind: only the synthetic side moved.
    assert checks["fidelity.segmenter_real_dice"].passed


@pytest.mark.slow  # four more audits; the default run keeps the faults above (CI runs it)
@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_each_degradation_fails_the_texture_checks_and_the_group(audits, kind):
    """5% noise, 1 px blur, 10% blotches, intensities shuffled inside each structure: all keep the anatomy."""
    checks, results = audits[f"degraded_{kind}"]
    assert checks["fidelity.discriminator_auc"].verdict is Verdict.FAIL  # shown by its lower bound, at 6 patients
    assert verdict(list(results.values())) == "fail"


def test_image_only_metrics_are_blind_to_shuffled_masks(audits):
    """Shuffling masks leaves the images real: the image-only checks must agree with the good case."""
    good, _ = audits["good"]
    shuffled, _ = audits["shuffled_labels"]
    for name in ("fidelity.fd_excess_segmenter", "fidelity.precision_ratio", "fidelity.coverage_ratio",
                 "fidelity.diversity_ratio"):
        assert shuffled[name].value == pytest.approx(good[name].value)


def test_metrics_and_figures(audits):
    _, results = audits["good"]
    mask = results["mask_consistency"].metrics
    assert set(mask["synthetic"]["by_vendor"]) == {"A", "B", "C"}
    assert 0 < mask["real_holdout"]["dice"]["mean"] <= 1 and mask["synthetic"]["volume_dice"]["mean"] > 0.5
    fd = results["feature_distance"].metrics["spaces"]["segmenter"]["fd"]
    lo, hi = fd["ratio_ci95"]
    assert lo <= hi and fd["holdout_vs_train"] > 0
    # the audit's own network's excess is (FD synthetic - FD holdout) over train's total feature variance; the
    # reported one is the mean over the space's networks (fidelity_networks), bounds around it
    own = (fd["synthetic_vs_train"] - fd["holdout_vs_train"]) / fd["train_total_variance"]
    per_network = fd.get("excess_per_network", [own])
    assert per_network[0] == pytest.approx(own) and fd["excess"] == pytest.approx(np.mean(per_network))
    assert fd["train_total_variance"] > 0 and fd["excess_bounds"][0] <= fd["excess"] <= fd["excess_bounds"][1]
    figures = [f for r in results.values() for f in r.figures]
    names = {f.name for f in figures}
    assert {"fidelity_sample_grid", "fidelity_mask_dice", "fidelity_prdc", "fidelity_intensity_histograms",
            "fidelity_spectra", "fidelity_discriminator_top", "fidelity_side_by_side"} <= names
    assert all(f.png.startswith(b"\x89PNG") for f in figures)
    grid = next(f for f in figures if f.name == "fidelity_sample_grid")
    assert grid.public  # synthetic slices only
    side = next(f for f in figures if f.name == "fidelity_side_by_side")
    assert not side.public  # real patients' slices: the internal report only


def test_mask_consistency_fails_closed_without_masks(heart_splits):
    syn = heart_splits["synthetic"]
    unlabelled = syn.select(np.arange(len(syn)))
    unlabelled.has_label[:] = False
    ctx = AuditContext(train=heart_splits["train"], holdout=heart_splits["holdout"], synthetic=unlabelled)
    with pytest.raises(ValueError, match="no label maps"):
        MaskConsistencyAuditor().run(ctx)
