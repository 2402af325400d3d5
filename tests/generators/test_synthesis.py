"""generators.synthesis: subjects made side by side (one CPU core each) are the subjects made one at a time, at any
thread count; a generator that does not declare thread-safe sampling is only ever sampled from one thread."""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import torch

from generators import create_generator
from generators.synthesis import synthesize

TINY = {"network": "tiny", "batch_size": 8, "sample_batch": 5}


@pytest.fixture(scope="module", params=["flow", "gan"])
def fitted(request, toy_train):
    settings = {**TINY, **({"steps": 2} if request.param == "flow" else {})}
    gen = create_generator(request.param, **settings)
    gen.fit(toy_train, epochs=1, seed=0, quiet=True)
    return gen


@contextlib.contextmanager
def _torch_threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cohort(gen, toy_train, *, parallel: bool, threads: int):
    gen.parallel_sampling = parallel  # the instance's switch hides the class's
    try:
        with _torch_threads(threads):
            return synthesize(gen, 6, seed=3, masks_from=toy_train)
    finally:
        del gen.parallel_sampling


def test_side_by_side_subjects_are_the_subjects_made_one_at_a_time(fitted, toy_train):
    together = _cohort(fitted, toy_train, parallel=True, threads=2)
    in_turn = _cohort(fitted, toy_train, parallel=False, threads=2)
    one_core = _cohort(fitted, toy_train, parallel=False, threads=1)
    # one core each: the very numbers of one core, whatever torch's thread count (a second intra-op thread
    # splits float sums differently: the same images to rounding)
    np.testing.assert_array_equal(together.images, one_core.images)
    np.testing.assert_allclose(together.images, in_turn.images, rtol=0, atol=1e-5)
    for other in (in_turn, one_core):
        np.testing.assert_array_equal(together.labels, other.labels)
        np.testing.assert_array_equal(together.subject_ids, other.subject_ids)
        assert together.subject_meta == other.subject_meta
    # the sampling layout is undone once the last thread leaves (training and saving need contiguous weights)
    for module in fitted._networks().values():
        for p in module.parameters():
            assert p.is_contiguous()
    assert fitted._samplers == 0


def test_a_generator_without_thread_safe_sampling_is_sampled_from_one_thread(fitted, toy_train, monkeypatch):
    seen = set()
    original = fitted.sample

    def recording(*args, **kwargs):
        seen.add(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(fitted, "sample", recording)
    monkeypatch.setattr(type(fitted), "parallel_sampling", False)
    with _torch_threads(2):
        synthesize(fitted, 5, seed=3, masks_from=toy_train)
    assert seen == {threading.get_ident()}


def test_subjects_are_made_in_several_threads_when_the_generator_allows(fitted, toy_train, monkeypatch):
    seen = set()
    original = fitted.sample
    barrier = threading.Barrier(2, timeout=20)

    def recording(*args, **kwargs):
        me = threading.get_ident()
        if me not in seen:  # each thread's first subject waits for the other's: two in flight at once
            seen.add(me)
            try:
                barrier.wait()
            except threading.BrokenBarrierError:  # one thread only: the assertion below says so
                pass
        return original(*args, **kwargs)

    monkeypatch.setattr(fitted, "sample", recording)
    with _torch_threads(2):
        synthesize(fitted, 4, seed=3, masks_from=toy_train)
    assert len(seen) == 2 and threading.get_ident() not in seen
