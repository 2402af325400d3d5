"""auditors.segmentation.parallel: independent trainings side by side, results in order, errors surfacing, the
caller's thread count restored, and a segmenter trained there equal to the same one trained alone."""
import threading

import pytest
import torch

from auditors.segmentation import parallel
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


def test_one_worker_runs_in_order_with_the_callers_threads():
    order = []
    assert map_jobs(lambda i: order.append(i) or torch.get_num_threads(), [0, 1, 2], workers=1) == \
        [torch.get_num_threads()] * 3
    assert order == [0, 1, 2]
    assert effective_workers(4, 3, "cuda") == 3 and effective_workers(4, 3, "cpu") == 3
    assert effective_workers(None, 10, "cuda") == parallel.CUDA_WORKERS
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


@pytest.mark.cuda
def test_gpu_jobs_run_on_their_own_streams_and_finish_before_returning(heart_slices):
    def job(i):
        stream = torch.cuda.current_stream()
        x = torch.full((256, 256), float(i), device="cuda")
        for _ in range(20):
            x = x @ torch.eye(256, device="cuda")
        return stream, x  # returned without a sync: map_jobs must have waited for the stream

    out = map_jobs(job, [1, 2, 3, 4], workers=2, device="cuda")
    streams = {s.cuda_stream for s, _ in out}
    assert torch.cuda.default_stream().cuda_stream not in streams and len(streams) >= 2
    assert [float(x.mean()) for _, x in out] == [1.0, 2.0, 3.0, 4.0]
    data = [heart_slices(3, seed=20), heart_slices(3, seed=21)]
    config = TrainConfig(steps=20, batch_size=4)
    trained = map_jobs(lambda d: train_segmenter(d, config, seed=5, device="cuda"), data, workers=2, device="cuda")
    assert all(next(s.model.parameters()).is_cuda and s.log["steps"] == 20 for s in trained)
