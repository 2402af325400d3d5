"""The audit's executors: local threads and Ray tasks give the same results, in order; errors fail closed; and
`cmri-release audit --executor ray` gives the verdict, checks and exit code of `--executor local`."""
from __future__ import annotations

import json
import math
import operator

import pytest
from click.testing import CliRunner

from auditors.executors import LocalExecutor, create_executor, open_executor
from cmri_release.cli import main
from cmri_release.io import write_cohort
from cmri_release.phantom import make_phantom


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("job 3 failed")
    return x * x


def test_local_keeps_order_and_raises_the_first_failure():
    assert LocalExecutor().map(operator.neg, [1, 2, 3], workers=2) == [-1, -2, -3]
    with pytest.raises(ValueError, match="job 3 failed"):
        LocalExecutor().map(_fail_on_three, [1, 3, 2], workers=2)


def test_unknown_executor_and_a_stray_address_are_refused():
    with pytest.raises(ValueError, match="unknown executor 'slurm'; choose one of local, ray"):
        create_executor("slurm")
    with pytest.raises(ValueError, match="only to --executor ray"):
        create_executor("local", address="ray://head:10001")


@pytest.mark.slow  # starts a local Ray instance; default run under 15 min on a slow 2-core machine (CI runs it)
def test_ray_runs_jobs_in_order_fails_closed_and_stops_its_instance():
    ray = pytest.importorskip("ray")
    with open_executor("ray") as executor:
        assert ray.is_initialized()
        # Jobs a Ray worker can import (a library function; a test module is not on the workers' path).
        assert executor.map(math.sqrt, [16, 1, 4]) == [4.0, 1.0, 2.0]
        with pytest.raises(Exception, match="math domain error"):
            executor.map(math.sqrt, [1, -1])
    assert not ray.is_initialized()  # the instance it started is gone


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohorts")
    return {name: write_cohort(make_phantom(4, seed=seed), root / name)
            for name, seed in (("train", 31), ("holdout", 32), ("synthetic", 33), ("test", 34))}


@pytest.mark.slow  # default run under 15 min on a slow 2-core machine; CI runs it
def test_audit_under_ray_gives_the_local_verdict(cohorts, tmp_path):
    pytest.importorskip("ray")
    docs, codes = {}, {}
    for name in ("local", "ray"):
        args = ["audit", *[a for k, p in cohorts.items() for a in (f"--{k}", str(p))], "--only", "utility",
                "--size", "32", "--quiet", "--option", "utility_epochs=1", "--seed", "5", "--executor", name,
                "--out", str(tmp_path / name)]
        result = CliRunner().invoke(main, args)
        codes[name] = result.exit_code
        docs[name] = json.loads((tmp_path / name / "audit.json").read_text())
    assert codes["ray"] == codes["local"] and codes["local"] in (0, 1)
    assert docs["ray"]["verdict"] == docs["local"]["verdict"]
    assert docs["ray"]["checks"] == docs["local"]["checks"]
    runs = {name: {k: v["dice"] for k, v in d["metrics"]["segmentation_utility"]["runs"].items()}
            for name, d in docs.items()}
    assert runs["ray"] == runs["local"]  # every segmenter, trained in a Ray worker or a thread, the same


@pytest.mark.slow
def test_lira_references_trained_in_ray_workers_are_the_local_ones():
    """The LiRA reference generators go to the audit's executor: trained in Ray workers (one CPU each) they hold the
    very weights trained in local threads (tiny flows on a 4-patient phantom)."""
    pytest.importorskip("ray")
    import functools

    import torch

    from auditors.privacy.lira import fit_reference
    from cmri_release.audit import _generator_factory
    from cmri_release.preprocess import PreprocessConfig, cohort_to_slices

    data = cohort_to_slices(make_phantom(4, seed=7), PreprocessConfig(size=16))
    jobs = [(data.for_subjects(data.subjects[:2]), 1000), (data.for_subjects(data.subjects[2:]), 2000)]
    fit = functools.partial(fit_reference, factory=_generator_factory, name="flow",
                            settings={"network": "tiny", "batch_size": 8, "steps": 2}, epochs=1, device="cpu",
                            quiet=True)
    local = LocalExecutor().map(fit, jobs, workers=2)
    with open_executor("ray") as executor:
        remote = executor.map(fit, jobs)
    for a, b in zip(local, remote):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
