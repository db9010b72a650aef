"""The two-stage protocol: TSN backbones trained per stream, joined, then their features cached.

Its first stage, used by ``stfn demo`` and by ``stfn ablate`` for a combination that changes the
backbone::

    build_features(tsn_cfg, runs_dir, features_dir, frames)
    # = train_backbones (runs_dir/tsn_rgb, runs_dir/tsn_flow), build_two_stream_checkpoint
    #   (runs_dir/tsn_two_stream/last.pt), extract_features (features_dir)

The second stage trains heads on those frozen features (``data.features``), several at a time with
:func:`train_runs` (one process and one thread per run on the CPU). Every step resumes.
"""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from stfn.config import STREAMS, Config, config_from_dict
from stfn.engine.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from stfn.engine.features import extract_features
from stfn.engine.train import train
from stfn.errors import StfnError
from stfn.models import build_model

__all__ = ["build_features", "build_two_stream_checkpoint", "parallel_processes", "train_backbones", "train_run",
           "train_runs"]


def train_run(cfg: Config, run_dir: Path, progress: bool, threads: int = 0) -> dict[str, Any]:
    """``train(..., resume=True).to_dict()``, with ``threads`` torch CPU threads for its duration (0: unchanged)."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return train(cfg, run_dir, resume=True, progress=progress).to_dict()
    finally:
        torch.set_num_threads(before)


def _worker_init(parent: int) -> None:
    """A :func:`train_runs` process: tqdm's lock as a thread lock, not its default multiprocessing one,
    whose semaphore a run stopped by Ctrl-C would leave behind (and Python warn about at exit); and a
    watchdog that ends the process when ``parent`` is gone. A parent killed with ``kill -9`` cannot stop
    its pool: without it the workers stayed, idle or still training, for ever (issue 28), holding the
    lock of the run folder that the same command run again must resume."""
    tqdm.set_lock(threading.RLock())

    def watchdog() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watchdog, name="stfn-parent-watchdog", daemon=True).start()


class _Prefixed:
    """A text stream that writes each whole line to ``out`` after ``prefix`` (the lines of runs side by
    side stay readable)."""

    def __init__(self, out: Any, prefix: str) -> None:
        self.out, self.prefix, self.buffer = out, prefix, ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.out.write(f"{self.prefix}{line}\n")
        self.out.flush()
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def _one_run(cfg: Config, run_dir: Path, progress: bool, quiet: bool | str, threads: int = 1) -> dict[str, Any]:
    """:func:`train_run` with ``threads`` threads, plus ``wall_s``. ``quiet`` (a run of :func:`train_runs`
    in a process of its own, whose lines would interleave with those of the runs beside it): True leaves
    its epoch lines out (warnings still show), a string prints them after that prefix."""
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if isinstance(quiet, str):
            stack.enter_context(contextlib.redirect_stdout(_Prefixed(sys.stdout, quiet)))
        elif quiet:
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        result = train_run(cfg, run_dir, progress, threads=threads)
    return {**result, "wall_s": round(time.perf_counter() - start, 2)}


def parallel_processes(jobs: int, device: str = "auto") -> int:
    """How many runs :func:`train_runs` trains at once: one per CPU thread torch may use (its default is
    one per core this process may run on; ``--threads N`` lowers it), at most ``jobs``; 1 on a GPU."""
    if device != "cpu" and (device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())):
        return 1
    return max(1, min(jobs, torch.get_num_threads(), len(os.sched_getaffinity(0))))


def train_runs(jobs: Sequence[tuple[str, Config, Path]], processes: int, log: Callable[[str], Any] = print,
               progress: bool = True, threads: int = 1, epoch_lines: bool = False) -> list[dict[str, Any]]:
    """Train every ``(label, cfg, run_dir)`` of ``jobs`` with ``threads`` torch threads each (default
    one), ``processes`` at a time; returns :func:`train_run`'s results (with ``wall_s``, the run's seconds) in the order of ``jobs``.

    One thread is what makes this safe to parallelise: a run's numbers depend on its thread count, and
    with one thread they are the same bit for bit whether it trains alone in this process or next to
    others in fresh ones (``spawn``), so the table does not depend on ``processes``. With
    ``processes`` > 1 each run's progress bar is replaced by one line when it finishes (and, with
    ``epoch_lines``, by its epoch lines, each after ``[label]``); an error in a
    run stops the others (their ``last.pt`` is kept, and rerunning resumes them).
    """
    if processes <= 1 or len(jobs) <= 1:
        return [_one_run(cfg, run_dir, progress, False, threads) for _, cfg, run_dir in jobs]
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    start, done = time.perf_counter(), 0
    each = "one thread" if threads == 1 else f"{threads} threads"
    lines = "its epoch lines and a line when it finishes" if epoch_lines else "a line per finished run"
    log(f"  {len(jobs)} runs, {processes} at a time (one process and {each} each; {lines})")
    with ProcessPoolExecutor(processes, multiprocessing.get_context("spawn"), _worker_init,
                             (os.getpid(),)) as pool:
        quiet = [f"  [{label}] " if epoch_lines else True for label, _, _ in jobs]
        pending: dict[Future, int] = {pool.submit(_one_run, cfg, run_dir, False, quiet[i], threads): i
                                      for i, (_, cfg, run_dir) in enumerate(jobs)}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    results[i] = future.result()
                    done += 1
                    top1 = (results[i].get("last") or {}).get("top1")
                    log(f"  {jobs[i][0]}: {'' if top1 is None else f'{top1:.1f}% test, '}{done}/{len(jobs)} "
                        f"runs done ({time.perf_counter() - start:.0f} s)")
        except BaseException:  # an error in one run, or Ctrl-C: stop the others now, not when they finish
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [r for r in results if r is not None]


def train_backbones(tsn: Config, runs_dir: Path, progress: bool = True,
                    log: Callable[[str], Any] = print) -> dict[str, dict[str, Any]]:
    """Train single-stream TSN on RGB and on flow (``tsn`` with ``model.streams`` replaced) into
    ``runs_dir/tsn_rgb`` and ``runs_dir/tsn_flow``; returns ``train``'s result per stream.

    With :func:`train_runs`: on a CPU with two threads or more the two side by side, each with half of
    torch's threads (one after the other on a GPU, with all of them). On 2 cores the demo's backbones
    took 44 s so, against 56 s one after the other with two threads each (Zen 5, ``results.json``
    timings): a network this small keeps one core busy better than two."""
    jobs = []
    for stream in STREAMS:
        cfg = copy.deepcopy(tsn)
        cfg.name, cfg.model.arch, cfg.model.streams = f"{tsn.name}-{stream}", "tsn", [stream]
        cfg.data.features, cfg.model.freeze_backbone = "", False
        jobs.append((f"TSN {stream}", cfg, runs_dir / f"tsn_{stream}"))
    processes = parallel_processes(len(jobs), tsn.train.device)
    results = train_runs(jobs, processes, log, progress, threads=max(1, torch.get_num_threads() // processes),
                         epoch_lines=True)
    return dict(zip(STREAMS, results, strict=True))


def build_two_stream_checkpoint(rgb_ckpt: Path, flow_ckpt: Path, out_path: Path) -> Path:
    """One TSN checkpoint holding the RGB network of ``rgb_ckpt`` and the flow network of ``flow_ckpt``.

    Its ``forward`` is TSN's weighted late fusion (``model.fusion_weights``, 1:1.5); it is also the
    source of the two-stream cached features. Written atomically; reused when it already exists.
    """
    if out_path.is_file():
        return out_path
    rgb, flow = load_checkpoint(rgb_ckpt), load_checkpoint(flow_ckpt)
    if rgb["classes"] != flow["classes"] or sorted(rgb["train_videos"]) != sorted(flow["train_videos"]):
        raise StfnError(f"'{rgb_ckpt}' and '{flow_ckpt}' were not trained on the same classes and videos")
    cfg = config_from_dict(rgb["config"])
    cfg.name, cfg.model.streams = "demo-tsn-two-stream", list(STREAMS)
    model = build_model(cfg.model)
    state = {k: v for k, v in rgb["model"].items() if ".rgb." in k or k.endswith(".rgb")}
    state.update({k: v for k, v in flow["model"].items() if ".flow." in k or k.endswith(".flow")})
    model.load_state_dict(state, strict=True)
    inherited = {"sources": sorted({*(rgb.get("inherited") or {}).get("sources", []),
                                    *(flow.get("inherited") or {}).get("sources", [])}),
                 "videos": sorted({*(rgb.get("inherited") or {}).get("videos", []),
                                   *(flow.get("inherited") or {}).get("videos", [])})}
    ckpt = make_checkpoint(model, cfg, rgb["classes"], 0, dataset=rgb.get("dataset"),
                           train_videos=rgb["train_videos"], history=[], inherited=inherited,
                           prepare=rgb.get("prepare"))
    save_checkpoint(ckpt, out_path)
    return out_path


def build_features(tsn: Config, runs_dir: Path, features_dir: Path, frames: int, progress: bool = True) -> Path:
    """The two-stage protocol's first stage: TSN backbones per stream (:func:`train_backbones`), joined
    into one checkpoint, whose per-frame features (``frames`` positions per video) go to ``features_dir``."""
    train_backbones(tsn, runs_dir, progress)
    two = build_two_stream_checkpoint(runs_dir / "tsn_rgb" / "last.pt", runs_dir / "tsn_flow" / "last.pt",
                                      runs_dir / "tsn_two_stream" / "last.pt")
    return extract_features(two, features_dir, frames=frames, device=tsn.train.device, progress=progress)
