"""A crash-tolerant process pool: ``job(task)`` for many tasks, in worker processes that die with their parent.

:func:`run_pool` hands ``(task, result)`` to ``done`` in the calling process as each task ends. A worker
process that dies (decoder segfault, out of memory) breaks the pool: the tasks that were in flight are
run again one at a time in a fresh pool, so that only the task that kills its worker ends as
``crashed(task)``. Workers are spawned, ignore Ctrl-C (the parent handles it), run OpenCV on one
thread, hold a shared lock on ``workers_lock`` while they live (so a new run can wait for the workers
of a killed one), and end themselves when their parent is gone, even after ``kill -9``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

__all__ = ["default_workers", "run_pool"]

Task = dict[str, Any]
Job = Callable[[Task], dict[str, Any]]
Done = Callable[[Task, dict[str, Any]], None]
Setup = Callable[[Any, int | None], None]

_held: list[Any] = []  # a worker's open lock file: open as long as the worker lives


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_pool(
    job: Job,
    tasks: list[Task],
    done: Done,
    crashed: Callable[[Task], dict[str, Any]],
    *,
    workers: int | None,
    setup: Setup,
    setup_arg: Any,
    workers_lock: Path,
) -> None:
    """Run ``job`` (a module-level function) over ``tasks`` and call ``done(task, result)`` as each ends.

    ``crashed(task)``: the result handed to ``done`` for a task whose worker process died.
    ``workers``: processes (``None``: :func:`default_workers`); ``0`` runs in this process.
    ``setup(setup_arg, index)`` prepares each process before its first task: ``index`` 0, 1, ... numbers
    the worker processes in start order, ``None`` is this process (``workers=0``).
    """
    workers = default_workers() if workers is None else max(0, int(workers))
    if workers == 0 or len(tasks) == 0:
        _run_here(job, tasks, done, setup, setup_arg)
    else:
        _run_workers(job, tasks, done, crashed, workers, (setup, setup_arg, os.getpid(), str(workers_lock)))


def _run_here(job: Job, tasks: list[Task], done: Done, setup: Setup, setup_arg: Any) -> None:
    import cv2  # OpenCV loads when a run starts, not when the command line imports this module

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # same work per process as a worker; restored below
    setup(setup_arg, None)
    try:
        for task in tasks:
            done(task, job(task))
    finally:
        cv2.setNumThreads(threads)


def _run_workers(job: Job, tasks: list[Task], done: Done, crashed: Callable[[Task], dict[str, Any]],
                 workers: int, initargs: tuple) -> None:
    """The pool loop (``initargs``: :func:`_worker_init`'s first four). After a crash, one task at a
    time until every suspect has run on its own."""
    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)

    def pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(min(workers, len(tasks)), ctx, _worker_init, (*initargs, counter))

    queue, suspects = deque(tasks), deque()
    inflight: dict[Any, Task] = {}
    executor = pool()
    finished_ok = False
    try:
        while queue or suspects or inflight:
            alone = bool(suspects) or any(t["alone"] for t in inflight.values())
            while (suspects or (queue and not alone)) and len(inflight) < (1 if alone else 2 * workers):
                task = suspects.popleft() if suspects else queue.popleft()
                task["alone"] = alone
                inflight[executor.submit(job, task)] = task
            finished, _ = wait(list(inflight), timeout=1.0, return_when=FIRST_COMPLETED)
            broken = False
            for fut in finished:
                task = inflight.pop(fut)
                try:
                    done(task, fut.result())
                except BrokenProcessPool:
                    broken = True
                    if task["alone"]:
                        done(task, crashed(task))
                    else:
                        suspects.append(task)
            if broken:
                suspects.extend(t for t in inflight.values() if not t["alone"])
                for t in [t for t in inflight.values() if t["alone"]]:
                    done(t, crashed(t))
                inflight.clear()
                _stop(executor)
                executor = pool()
        executor.shutdown(wait=True)  # idle workers exit and are reaped
        finished_ok = True
    finally:
        if not finished_ok:
            _stop(executor)


def _worker_init(setup: Setup, setup_arg: Any, parent: int, workers_lock: str, counter) -> None:
    """Worker set-up: one thread per library, ignore Ctrl-C (the parent handles it), exit with the parent."""
    import cv2  # see _run_here

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    with counter.get_lock():
        index, counter.value = counter.value, counter.value + 1
    setup(setup_arg, index)
    try:
        import fcntl  # POSIX only

        lock = open(workers_lock, "a")  # noqa: SIM115
        _held.append(lock)
        fcntl.flock(lock, fcntl.LOCK_SH)
    except ImportError:
        pass

    def watchdog() -> None:  # a parent killed with SIGKILL cannot stop us: stop ourselves
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()


def _stop(executor: ProcessPoolExecutor) -> None:
    """Shut the pool down now (interrupt, broken pool): workers must not finish their tasks first."""
    procs = list((getattr(executor, "_processes", None) or {}).values())  # shutdown() forgets them
    executor.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=5)
