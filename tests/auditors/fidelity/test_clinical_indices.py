"""Cardiac clinical indices: computed right (phantom ground truth, hand counts), compared right (scipy references),
and three verdicts that follow the anatomy (faithful passes, shrunk or group-shuffled hearts fail, small is unsure)."""
import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from auditors.base import AuditContext, Verdict
from auditors.fidelity.clinical_indices import (CHECK, INDICES, ClinicalIndicesAuditor, bootstrap_distance,
                                                cohort_indices, distance_bounds, group_distance, indices_from_volumes,
                                                pass_probability, slice_indices, table)
from cmri_release.phantom import make_phantom
from cmri_release.phantom.anatomy import sample_anatomy
from cmri_release.preprocess import PreprocessConfig, cohort_to_slices



# --- the indices -------------------------------------------------------------------------------------------
def test_indices_from_volumes_by_hand():
    ed = np.zeros((10, 10, 4), np.uint8)
    ed[2:6, 2:6, :] = 3  # LV 64 voxels
    ed[6:8, 2:6, :] = 2  # MYO 32 voxels
    ed[0:2, 0:5, :] = 1  # RV 40 voxels
    es = ed.copy()
    es[2:4, 2:6, :] = 2  # LV 32 voxels at ES
    es[0:1, 0:5, :] = 0  # RV 20 voxels at ES
    got = indices_from_volumes(ed, es, voxel_ml=0.5)
    assert got == pytest.approx({"lv_edv_ml": 32.0, "lv_esv_ml": 16.0, "lv_ef": 50.0, "lv_mass_g": 16.0 * 1.05,
                                 "rv_edv_ml": 20.0, "rv_esv_ml": 10.0, "rv_ef": 50.0})


def _truth(seed: int, index: int, group: str):
    """The phantom's analytic volumes: the anatomy render_subject drew for patient `index` of `seed`."""
    anat_seed = np.random.SeedSequence([seed, index]).spawn(4)[0]
    return sample_anatomy(np.random.default_rng(anat_seed), group).heart


@pytest.fixture(scope="module")
def phantom10():
    return make_phantom(10, seed=41)


def test_indices_match_the_phantom_ground_truth(phantom10):
    """Label-counted volumes at native resolution against the phantom's integrated ones. The labels stop at the
    basal slice, so counted volumes run a few percent low, more at ED than at ES (measured on this cohort: LV EDV
    -9%..+1%, RV EDV -11%..+1%, LV EF -7.4..+0.6 points, RV EF -5.8..+1.2 points)."""
    got = cohort_indices(phantom10)
    truth_ed, truth_es, count_ed, count_es, rv_truth, rv_count = [], [], [], [], [], []
    for i, subject in enumerate(phantom10):
        heart = _truth(41, i, subject.group)
        row = got[subject.id]
        truth_ed.append(heart.lv_cavity_volume("ED"))
        truth_es.append(heart.lv_cavity_volume("ES"))
        rv_truth.append(heart.rv_cavity_volume("ED"))
        count_ed.append(row["lv_edv_ml"])
        count_es.append(row["lv_esv_ml"])
        rv_count.append(row["rv_edv_ml"])
        assert row["lv_edv_ml"] == pytest.approx(truth_ed[-1], rel=0.15)
        assert row["rv_edv_ml"] == pytest.approx(rv_truth[-1], rel=0.15)
        assert row["lv_ef"] == pytest.approx(100 * heart.target_ef, abs=9.0)
        assert row["rv_ef"] == pytest.approx(100 * heart.target_rv_ef, abs=8.0)
        assert row["lv_mass_g"] > 0
        assert row["group"] == subject.group
    for a, b in ((truth_ed, count_ed), (truth_es, count_es), (rv_truth, rv_count)):
        assert np.corrcoef(a, b)[0, 1] > 0.97
    # The groups the phantom draws show in the indices (DCM dilated and weak, HCM thick-walled).
    by = {g: [r for r in got.values() if r["group"] == g] for g in ("NOR", "DCM", "HCM")}
    assert min(r["lv_edv_ml"] for r in by["DCM"]) > max(r["lv_edv_ml"] for r in by["NOR"])
    assert max(r["lv_ef"] for r in by["DCM"]) < 40 < min(r["lv_ef"] for r in by["NOR"])
    assert min(r["lv_mass_g"] for r in by["HCM"]) > max(r["lv_mass_g"] for r in by["NOR"])


def test_slice_indices_of_the_preprocessed_cohort_match_native_resolution(phantom10):
    """The audit reads 32 px slices (5 mm pixels): the volumes it sees stay within 6% of the native counts."""
    native = cohort_indices(phantom10)
    sliced, skipped = slice_indices(cohort_to_slices(phantom10, PreprocessConfig(size=32)))
    assert not skipped and set(sliced) == set(native)
    for sid, row in sliced.items():
        for key in ("lv_edv_ml", "lv_mass_g", "rv_edv_ml"):
            assert row[key] == pytest.approx(native[sid][key], rel=0.06), (sid, key)
        assert row["lv_ef"] == pytest.approx(native[sid]["lv_ef"], abs=3.0)


def test_patients_without_spacing_or_a_phase_are_left_out_with_a_reason(heart_slices):
    s = heart_slices(4, seed=3)
    s.subject_meta[s.subjects[0]] = {}
    s = s.select(~((s.subject_ids == s.subjects[1]) & (s.phases == "ES")))
    got, skipped = slice_indices(s)
    assert set(skipped) == {s.subjects[0], s.subjects[1]} and len(got) == 2
    assert "thickness" in skipped[s.subjects[0]] and "ED and ES" in skipped[s.subjects[1]]


# --- the distance against references -----------------------------------------------------------------------
def test_group_distance_matches_scipy_statistics():
    rng = np.random.default_rng(0)
    groups = ["A", "B", "C"]
    ga = np.repeat(groups, [8, 12, 5])
    gb = np.repeat(groups, [10, 10, 20])
    a = rng.normal(size=(len(ga), 2)) + (ga == "B")[:, None]
    b = rng.normal(size=(len(gb), 2))
    got, smd = group_distance(a, ga, b, gb, groups)
    for j in range(2):
        # pooled within-group SD of b: the residual of a one-way ANOVA (scipy's f_oneway shares its sums).
        resid = np.concatenate([b[gb == g, j] - b[gb == g, j].mean() for g in groups])
        sd = math.sqrt(np.sum(resid ** 2) / (len(gb) - len(groups)))
        ref_smd = [(stats.tmean(a[ga == g, j]) - stats.tmean(b[gb == g, j])) / sd for g in groups]
        w = np.array([10, 10, 20]) / 40
        assert smd[:, j] == pytest.approx(ref_smd)
        assert got[j] == pytest.approx(math.sqrt(np.sum(w * np.square(ref_smd))))


def test_bootstrap_matches_scipy_bootstrap_for_one_group():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.3, 1, size=(40, 1)), rng.normal(0, 1, size=(50, 1))
    ga, gb = np.full(40, "g"), np.full(50, "g")
    ours = bootstrap_distance(a, ga, b, gb, ["g"], 4000, np.random.default_rng(2))[:, 0]

    def statistic(x, y):
        return np.abs(np.mean(x, axis=-1) - np.mean(y, axis=-1)) / np.std(y, axis=-1, ddof=1)

    ref = stats.bootstrap((a[:, 0], b[:, 0]), statistic, n_resamples=4000, method="percentile",
                          confidence_level=0.90, random_state=3).confidence_interval
    assert np.quantile(ours, 0.05) == pytest.approx(ref.low, abs=0.04)
    assert np.quantile(ours, 0.95) == pytest.approx(ref.high, abs=0.04)


def test_bounds_fail_closed_on_undefined_replicates():
    assert all(math.isnan(x) for x in distance_bounds(0.2, np.full(100, np.nan), 0.01))
    lo, hi = distance_bounds(0.2, np.linspace(0, 1, 1001), 0.01)
    assert lo == pytest.approx(0.01) and hi == pytest.approx(0.95)
    lo, hi = distance_bounds(0.5, np.linspace(0, 1, 1001), 0.5, bias=0.09)  # the noise taken off the fail side
    assert lo == pytest.approx(0.4) and hi == pytest.approx(0.95)
    some_undefined = np.r_[np.linspace(0, 1, 980), np.full(20, np.nan)]  # 2% undefined: counted as the worst
    assert distance_bounds(0.2, some_undefined, 0.01)[1] == pytest.approx(np.linspace(0, 1, 980)[950])
    assert math.isnan(distance_bounds(0.2, np.r_[np.zeros(90), np.full(10, np.nan)], 0.01)[1])


def test_planning_model_matches_the_bootstrapped_procedure():
    """The closed-form pass probability (noncentral chi-square) against the real procedure simulated."""
    rng = np.random.default_rng(4)
    n, k, t = 40, 2, 0.6
    groups = ["x", "y"]
    g = np.repeat(groups, n // k)
    passes = 0
    reps = 150
    for _ in range(reps):
        a, b = rng.normal(size=(n, 1)), rng.normal(size=(n, 1))
        d = group_distance(a, g, b, g, groups)[0][0]
        passes += distance_bounds(d, bootstrap_distance(a, g, b, g, groups, 300, rng)[:, 0], 0.05)[1] <= t
    assert passes / reps == pytest.approx(pass_probability(n, n, k, t, 0.0), abs=0.12)
    assert pass_probability(n, n, k, t, 1.0) < pass_probability(n, n, k, t, 0.0)
    assert pass_probability(4 * n, 4 * n, k, t, 0.0) > pass_probability(n, n, k, t, 0.0)


# --- verdicts ----------------------------------------------------------------------------------------------
def _with_size_groups(slices, cut: float):
    """Two pathology-like groups set by the heart's size (as DCM vs NOR): 'big' above `cut` ml LV EDV."""
    rows, _ = slice_indices(slices)
    for sid, row in rows.items():
        slices.subject_meta[sid]["group"] = "big" if row["lv_edv_ml"] > cut else "small"
    return slices


def _audit(train, holdout, synthetic, **thresholds):
    ctx = AuditContext(train=train, holdout=holdout, synthetic=synthetic, seed=0, thresholds=thresholds, quiet=True)
    return ClinicalIndicesAuditor().run(ctx)


@pytest.fixture(scope="module")
def real(heart_slices):
    """Three disjoint cohorts of one population (train, holdout, faithful synthetic), groups by heart size."""
    cut = np.median(table(slice_indices(heart_slices(200, seed=90))[0])[0][:, 0])
    return [_with_size_groups(heart_slices(n, seed=s, prefix=p), cut)
            for n, s, p in ((150, 91, "t"), (150, 92, "h"), (150, 93, "y"))]


def test_a_faithful_cohort_passes(real):
    result = _audit(*real)
    check = result.checks[0]
    assert check.name == CHECK and check.verdict is Verdict.PASS, check.reason
    assert check.upper <= check.threshold and check.lower <= check.estimate <= check.upper
    assert set(result.metrics["distance"]) == set(INDICES)
    assert result.metrics["groups_compared"] == ["big", "small"]
    assert set(result.metrics["real_vs_real"]) == set(INDICES)
    assert 0 < check.plan["honest_pass_probability"] <= 1


def test_shrunk_hearts_fail(real):
    """Every LV/RV/MYO pixel on the outer ring of a structure turned to background: the anatomy is too small."""
    from scipy import ndimage

    syn = real[2]
    labels = syn.labels.copy()
    for i, lab in enumerate(labels):
        heart = ndimage.binary_erosion(lab > 0)
        labels[i] = np.where(heart, lab, 0)
    check = _audit(real[0], real[1], dataclasses.replace(syn, labels=labels)).checks[0]
    assert check.verdict is Verdict.FAIL, check.reason


def test_shuffled_groups_fail_although_the_overall_means_match(real):
    """The synthetic patients' group labels permuted: the pooled cohort is unchanged, each group's hearts wrong."""
    syn = real[2]
    rng = np.random.default_rng(5)
    ids = syn.subjects
    groups = [syn.subject_meta[s]["group"] for s in ids]
    meta = {s: {**syn.subject_meta[s], "group": g} for s, g in zip(ids, rng.permutation(groups))}
    shuffled = dataclasses.replace(syn, subject_meta=meta)
    check = _audit(real[0], real[1], shuffled).checks[0]
    assert check.verdict is Verdict.FAIL, check.reason


@pytest.mark.parametrize("n", [6, 14])
def test_a_small_faithful_cohort_is_inconclusive_and_says_what_would_decide(real, n):
    """Few patients per group: the distance is mostly noise; it must neither pass nor fail (the demo's 40-patient
    phantom, 2 holdout patients per group, failed before the fail side took the noise into account)."""
    small = [s.for_subjects(s.subjects[:n]) for s in real]
    check = _audit(*small).checks[0]
    assert check.verdict is Verdict.INCONCLUSIVE, check.reason
    assert "patients" in check.decide


def test_nothing_to_compare_fails_closed(real):
    syn = real[2]
    meta = {s: {k: v for k, v in m.items() if k != "thickness_mm"} for s, m in syn.subject_meta.items()}
    broken = dataclasses.replace(syn, subject_meta=meta)
    check = _audit(real[0], real[1], broken).checks[0]
    assert check.verdict is Verdict.FAIL and check.estimate is None
