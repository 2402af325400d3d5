"""One contract over every registered auditor (as tests/generators/test_contract.py has over every generator): built
from the registry, run once on a tiny in-memory audit, each returns a well-formed result (auditor_contract.py: its
own name and group, no error, only its declared checks, each with a verdict, JSON-ready metrics, PNG figures) and
reads only options it declared (an undeclared read raises, which the runner turns into an error)."""
from __future__ import annotations

import pytest

import auditors  # noqa: F401 - registers every auditor
from auditor_contract import assert_follows_the_contract
from auditors.base import AUDITORS, GROUPS, AuditContext, AuditResult, create_auditor
from auditors.features import FEATURE_SPACES, features
from auditors.runner import run_auditors

# Every knob at its cheapest: the contract is about shape, not about the numbers.
TINY = {"feature_spaces": ["pixels", "embedding"], "pixel_size": 16, "mia_bootstrap": 50, "fidelity_bootstrap": 10,
        "embedding_steps": 2, "embedding_input_size": 16, "embedding_dim": 8, "embedding_width": 4,
        "embedding_batch_size": 16, "utility_epochs": 0.05, "utility_experiments": ["mixed"], "segmenter_workers": 1,
        "domias_max_points": 40, "domias_components": 2}


@pytest.fixture(scope="module")
def tiny_ctx(heart_slices) -> AuditContext:
    splits = {"train": heart_slices(6, size=32, seed=0, prefix="tr", slices_per_phase=2),
              "holdout": heart_slices(3, size=32, seed=1, prefix="ho", slices_per_phase=2),
              "test": heart_slices(3, size=32, seed=2, prefix="te", slices_per_phase=2),
              "synthetic": heart_slices(3, size=32, seed=3, prefix="sy", slices_per_phase=2)}
    return AuditContext(**splits, seed=0, options=dict(TINY), quiet=True)


@pytest.fixture(scope="module")
def results(tiny_ctx) -> dict[str, AuditResult]:
    return {r.auditor: r for r in run_auditors(tiny_ctx, GROUPS)}


def test_every_group_has_an_auditor():
    assert {cls.group for cls in AUDITORS.values()} == set(GROUPS)


@pytest.mark.parametrize("name", sorted(AUDITORS))
def test_built_from_the_registry(name):
    auditor = create_auditor(name)
    assert type(auditor) is AUDITORS[name] and auditor.name == name and auditor.group in GROUPS
    for check, (threshold, op, description) in auditor.default_thresholds.items():
        assert check.startswith(f"{auditor.group}.") and op in ("<=", ">=") and description


@pytest.mark.parametrize("name", sorted(AUDITORS))
def test_result_shape(results, name):
    assert_follows_the_contract(results[name], AUDITORS[name])
    for check in results[name].checks:  # no override given: each threshold is the declared default
        assert check.threshold == AUDITORS[name].default_thresholds[check.name][0]
    assert results[name].seconds > 0


@pytest.mark.parametrize("space", sorted(FEATURE_SPACES))
def test_every_feature_space_maps_each_split_to_one_row_per_slice(tiny_ctx, results, space):
    for split in ("train", "synthetic"):
        vectors = features(tiny_ctx, space, split)
        assert vectors.ndim == 2 and len(vectors) == len(getattr(tiny_ctx, split)) and vectors.shape[1] > 0
