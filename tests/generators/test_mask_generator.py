"""The mask generator: valid, anatomically nested, consistent stacks with the training population's sizes and
group mix, deterministic, and never a copy of a training patient."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from cmri_release.core.labels import LV, MYO, RV
from generators.masks import MaskModel, rasterise, slice_features

from generator_toys import toy_slices

N_SAMPLES = 150
CROSS = ndimage.generate_binary_structure(2, 1)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * (a & b).sum() / total


def training_stacks(slices) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for sid in slices.subjects:
        out[sid] = {}
        for phase in ("ED", "ES"):
            idx = np.flatnonzero((slices.subject_ids == sid) & (slices.phases == phase))
            out[sid][phase] = slices.labels[idx[np.argsort(slices.slice_index[idx])]]
    return out


@pytest.fixture(scope="module")
def model(toy_population):
    return MaskModel().fit(toy_population)


@pytest.fixture(scope="module")
def sampled(model):
    return model.sample(N_SAMPLES, seed=11)


@pytest.fixture(scope="module")
def real(toy_population):
    return training_stacks(toy_population)


def test_labels_are_valid_and_stacks_consistent_in_shape(sampled, model):
    low, high = model.slice_range
    for s in sampled:
        ed, es = s.labels["ED"], s.labels["ES"]
        assert ed.dtype == np.uint8 and ed.shape == es.shape and ed.shape[1:] == (32, 32)
        assert low <= len(ed) <= high
        assert set(np.unique(ed)) <= {0, 1, 2, 3} and set(np.unique(es)) <= {0, 1, 2, 3}
        assert s.group in model.groups


def test_lv_cavity_is_enclosed_by_myocardium(sampled):
    for s in sampled:
        for stack in s.labels.values():
            for lab in stack:
                lv = lab == LV
                ring = ndimage.binary_dilation(lv, CROSS) & ~lv
                assert (lab[ring] == MYO).all()


def _rv_touches_myo_rate(stacks) -> float:
    hits, total = 0, 0
    for stack in stacks:
        for lab in stack:
            if (lab == RV).any() and (lab == MYO).any():
                total += 1
                hits += bool((ndimage.binary_dilation(lab == MYO, CROSS) & (lab == RV)).any())
    return hits / total


def test_rv_lies_beside_the_myocardium(sampled, real):
    real_rate = _rv_touches_myo_rate([r["ED"] for r in real.values()])
    assert real_rate > 0.9
    assert _rv_touches_myo_rate([s.labels["ED"] for s in sampled]) >= real_rate - 0.05


def _neighbour_dice(stacks) -> float:
    values = [dice(np.isin(a, (LV, MYO)), np.isin(b, (LV, MYO))) for st in stacks for a, b in zip(st[:-1], st[1:])]
    return float(np.mean(values))


def test_neighbouring_slices_are_as_consistent_as_real_ones(sampled, real):
    real_value = _neighbour_dice([r["ED"] for r in real.values()])
    assert _neighbour_dice([s.labels["ED"] for s in sampled]) == pytest.approx(real_value, abs=0.05)


def test_es_is_contracted_ed_like_real_patients(sampled, real):
    def ef(stacks):
        ed = np.array([(s["ED"] == LV).sum() for s in stacks], float)
        es = np.array([(s["ES"] == LV).sum() for s in stacks], float)
        return 1 - es / ed

    real_ef = ef(list(real.values()))
    syn_ef = ef([s.labels for s in sampled])
    assert (syn_ef > 0).mean() >= 0.95
    assert syn_ef.mean() == pytest.approx(real_ef.mean(), abs=0.08)


@pytest.mark.parametrize("structure", [RV, MYO, LV])
def test_structure_sizes_match_the_training_population(sampled, real, structure):
    real_sizes = np.array([(r["ED"] == structure).sum() for r in real.values()], float)
    syn_sizes = np.array([(s.labels["ED"] == structure).sum() for s in sampled], float)
    assert syn_sizes.mean() == pytest.approx(real_sizes.mean(), rel=0.15)
    assert 0.5 < syn_sizes.std() / real_sizes.std() < 1.5


def test_group_mix_and_group_effect(sampled, toy_population, model):
    groups = [m["group"] for m in toy_population.subject_meta.values()]
    for g in model.groups:
        assert np.mean([s.group == g for s in sampled]) == pytest.approx(groups.count(g) / len(groups), abs=0.01)
    # the toy's DCM hearts are larger: the sampled DCM patients must be too
    lv = {g: np.mean([(s.labels["ED"] == LV).sum() for s in sampled if s.group == g]) for g in model.groups}
    assert lv["DCM"] > 1.2 * lv["NOR"]


def test_no_sample_copies_a_training_patient(sampled, real):
    for s in sampled:
        for r in real.values():
            for phase in ("ED", "ES"):
                assert not (s.labels[phase].shape == r[phase].shape and np.array_equal(s.labels[phase], r[phase]))
    # and none is a near copy: each sample's best match among training stacks of the same depth stays imperfect
    best = []
    for s in sampled[:40]:
        scores = [np.mean([dice(a > 0, b > 0) for a, b in zip(s.labels["ED"], r["ED"])])
                  for r in real.values() if len(r["ED"]) == len(s.labels["ED"])]
        if scores:
            best.append(max(scores))
    assert np.max(best) < 0.97


def test_sampling_is_deterministic(model, sampled):
    again = model.sample(N_SAMPLES, seed=11)
    for a, b in zip(again, sampled):
        assert a.group == b.group
        np.testing.assert_array_equal(a.labels["ED"], b.labels["ED"])
        np.testing.assert_array_equal(a.labels["ES"], b.labels["ES"])
    other = model.sample(3, seed=12)
    assert any(a.labels["ED"].shape != b.labels["ED"].shape or not np.array_equal(a.labels["ED"], b.labels["ED"])
               for a, b in zip(other, sampled[:3]))


def test_a_small_cohort_gets_the_group_mix_exactly(model):
    groups = [s.group for s in model.sample(10, seed=3)]
    assert sorted(groups) == ["DCM"] * 5 + ["NOR"] * 5


def test_state_round_trips_through_json(model):
    state = json.loads(json.dumps(model.to_dict()))
    restored = MaskModel.from_dict(state)
    for a, b in zip(restored.sample(4, seed=5), model.sample(4, seed=5)):
        np.testing.assert_array_equal(a.labels["ES"], b.labels["ES"])
    broken = dict(state, mean=state["mean"][:-1])
    with pytest.raises(ValueError, match="inconsistent"):
        MaskModel.from_dict(broken)
    with pytest.raises(ValueError, match="polar-shape-gaussian"):
        MaskModel.from_dict(dict(state, kind="pickle"))


def test_descriptor_reconstructs_a_real_slice(toy_population):
    """Ground truth for the shape descriptor: features of a real slice, drawn again, give back the slice."""
    lab = toy_population.labels[0]
    centre = np.argwhere(np.isin(lab, (LV, MYO))).mean(axis=0)
    again = rasterise(slice_features(lab, centre), lab.shape[0])
    for k in (RV, MYO, LV):
        assert dice(again == k, lab == k) > 0.9


def test_too_few_patients_is_an_error():
    with pytest.raises(ValueError, match="at least 3 patients"):
        MaskModel().fit(toy_slices(n_subjects=2, size=32, seed=3))


def test_group_weights_survive_json_rounding():
    """Three groups of three patients: weights of 1/3 rounded in JSON must still sample."""
    slices = toy_slices(n_subjects=9, size=32, seed=4)
    for i, sid in enumerate(slices.subjects):
        slices.subject_meta[sid]["group"] = ("NOR", "DCM", "HCM")[i % 3]
    model = MaskModel().fit(slices)
    restored = MaskModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert [s.group for s in restored.sample(6, seed=2)] == [s.group for s in model.sample(6, seed=2)]
