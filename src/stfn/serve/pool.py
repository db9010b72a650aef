"""The bounded worker pool that runs predictions for ``stfn serve``.

``workers`` threads run predictions; at most ``workers + queue`` requests hold a slot at a time (being
received, waiting or running). A request that finds every slot taken is refused at once with
:class:`QueueFull` (the server answers 503 with ``Retry-After``), so a burst never makes the server
hang or run out of memory. Each worker thread uses ``threads`` CPU threads for torch and OpenCV
(default: the cores this process may use divided by ``workers``), so that the workers do not fight
over the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from stfn.errors import StfnError
from stfn.machine import usable_cores

__all__ = ["QueueFull", "WorkerPool", "threads_per_worker"]

T = TypeVar("T")


class QueueFull(Exception):
    """Every slot of the pool is taken; ``retry_after`` is the seconds to wait before trying again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy: every worker and queue place is taken; retry in {retry_after} s")
        self.retry_after = retry_after


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """CPU threads each of ``workers`` may use so that together they use each core once (at least 1)."""
    return max(1, (cores or usable_cores()) // max(1, workers))


class WorkerPool:
    """``workers`` prediction threads behind a queue of ``queue`` places.

    Usage (in an ``async`` route)::

        async with pool.slot():              # raises QueueFull at once when the pool is full
            upload = await receive(...)      # the slot is held while the upload arrives
            result = await pool.run(fn, upload)
    """

    def __init__(self, workers: int = 1, queue: int = 8, threads: int | None = None) -> None:
        if workers < 1:
            raise StfnError(f"--workers must be at least 1, got {workers}")
        if queue < 0:
            raise StfnError(f"--queue must be 0 or more, got {queue}")
        self.workers, self.queue = int(workers), int(queue)
        self.threads = int(threads) if threads else threads_per_worker(self.workers)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="stfn-serve-worker",
                                            initializer=self._init_worker)
        self._lock = threading.Lock()
        self._held = 0  # slots taken (receiving, queued or running)
        self._running = 0
        self._mean_seconds = 1.0  # running mean of a prediction's duration, for Retry-After
        self.served = 0
        self.refused = 0

    def _init_worker(self) -> None:
        torch.set_num_threads(self.threads)  # OpenMP's thread count is per calling thread

    @property
    def capacity(self) -> int:
        return self.workers + self.queue

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the mean duration times the requests ahead per worker."""
        with self._lock:
            ahead = max(1, self._held - self.workers + 1)
            return max(1, min(60, math.ceil(self._mean_seconds * ahead / self.workers)))

    def acquire(self) -> None:
        """Take a slot or raise :class:`QueueFull` (never waits)."""
        with self._lock:
            if self._held >= self.capacity:
                self.refused += 1
                full = True
            else:
                self._held += 1
                full = False
        if full:
            raise QueueFull(self.retry_after())

    def release(self) -> None:
        with self._lock:
            self._held = max(0, self._held - 1)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block (raises :class:`QueueFull` when none is free)."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def _timed(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._lock:
            self._running += 1
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            seconds = time.perf_counter() - start
            with self._lock:
                self._running -= 1
                self.served += 1
                self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * seconds

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread (the caller holds a slot)."""
        return await asyncio.wrap_future(self._executor.submit(self._timed, fn, args))

    def status(self) -> dict[str, Any]:
        """Workers, queue places, threads per worker, slots held, running now, served and refused so far."""
        with self._lock:
            return {"workers": self.workers, "queue": self.queue, "threads_per_worker": self.threads,
                    "held": self._held, "running": self._running, "served": self.served, "refused": self.refused}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
