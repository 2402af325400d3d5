"""auditors.segmentation.parallel: independent trainings side by side, results in order, errors surfacing, the
caller's thread count restored, and a segmenter trained there equal to the same one trained alone."""
import threading

import pytest
import torch

from auditors.segmentation.parallel import effective_workers, map_jobs
from auditors.segmentation.train import TrainConfig, train_segmenter


def test_jobs_really_run_side_by_side_and_come_back_in_order():
    both_started = threading.Barrier(2, timeout=20)  # one at a time, the first job would wait here forever

    def job(i):
        if i < 2:
            both_started.wait()
        return i * 10, torch.get_num_threads()

    before = torch.get_num_threads()
    out = map_jobs(job, [0, 1, 2, 3], workers=2)
    assert [r[0] for r in out] == [0, 10, 20, 30]
    assert {r[1] for r in out} == {1}  # one intra-op thread per job
    assert torch.get_num_threads() == before


def test_one_worker_or_a_gpu_runs_in_order_with_the_callers_threads():
    order = []
    assert map_jobs(lambda i: order.append(i) or torch.get_num_threads(), [0, 1, 2], workers=1) == \
        [torch.get_num_threads()] * 3
    assert order == [0, 1, 2]
    assert effective_workers(4, 3, "cuda") == 1 and effective_workers(4, 3, "cpu") == 3
    assert effective_workers(None, 10, "cpu") == max(1, torch.get_num_threads())


def test_a_failing_job_fails_the_whole_map_and_restores_threads():
    before = torch.get_num_threads()

    def job(i):
        if i == 1:
            raise ValueError("segmenter 1 diverged")
        return i

    with pytest.raises(ValueError, match="diverged"):
        map_jobs(job, [0, 1, 2], workers=2)
    assert torch.get_num_threads() == before


def test_segmenters_trained_side_by_side_equal_the_same_trained_alone(heart_slices):
    data = [heart_slices(3, seed=20), heart_slices(3, seed=21)]
    config = TrainConfig(steps=3, batch_size=4)
    together = map_jobs(lambda d: train_segmenter(d, config, seed=5), data, workers=2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what each job ran with
    try:
        alone = [train_segmenter(d, config, seed=5) for d in data]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(together, alone):
        for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(pa, pb), name
