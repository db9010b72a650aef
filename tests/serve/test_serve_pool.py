"""The bounded worker pool: a full pool refuses at once, a slot is always given back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from stfn.errors import StfnError
from stfn.serve.pool import QueueFull, WorkerPool, threads_per_worker


def test_threads_per_worker_shares_the_cores() -> None:
    assert threads_per_worker(1, cores=8) == 8 and threads_per_worker(3, cores=8) == 2
    assert threads_per_worker(4, cores=2) == 1  # never 0


def test_full_pool_refuses_at_once_and_frees_its_slots() -> None:
    pool = WorkerPool(workers=1, queue=1, threads=1)
    gate, started = threading.Event(), threading.Event()

    def blocking() -> str:
        started.set()
        assert gate.wait(10)
        return "done"

    async def scenario() -> list:
        async def one() -> str:
            async with pool.slot():
                return await pool.run(blocking)

        first = asyncio.ensure_future(one())
        second = asyncio.ensure_future(one())
        await asyncio.sleep(0)  # both take their slot: one runs, one waits
        assert pool.status()["held"] == 2
        with pytest.raises(QueueFull) as e:
            async with pool.slot():
                pass
        assert e.value.retry_after >= 1 and "busy" in str(e.value)
        gate.set()
        return await asyncio.gather(first, second)

    try:
        assert asyncio.run(scenario()) == ["done", "done"]
        status = pool.status()
        assert status["held"] == 0 and status["running"] == 0 and status["served"] == 2 and status["refused"] == 1
    finally:
        pool.shutdown()


def test_a_failing_job_gives_its_slot_back() -> None:
    pool = WorkerPool(workers=1, queue=0, threads=1)

    def boom() -> None:
        raise ValueError("bad file")

    async def scenario() -> None:
        for _ in range(3):  # a leaked slot would make the second round QueueFull
            with pytest.raises(ValueError, match="bad file"):
                async with pool.slot():
                    await pool.run(boom)

    try:
        asyncio.run(scenario())
        assert pool.status()["held"] == 0
    finally:
        pool.shutdown()


def test_worker_threads_use_their_thread_count() -> None:
    import torch

    pool = WorkerPool(workers=2, queue=0, threads=1)
    try:
        assert asyncio.run(pool.run(torch.get_num_threads)) == 1
    finally:
        pool.shutdown()


@pytest.mark.parametrize(("kwargs", "flag"), [({"workers": 0}, "--workers"), ({"queue": -1}, "--queue")])
def test_bad_sizes_are_one_sentence(kwargs: dict, flag: str) -> None:
    with pytest.raises(StfnError, match=flag):
        WorkerPool(**kwargs)
