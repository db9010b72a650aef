"""`stfn compare` and `stfn demo` killed with SIGKILL (at a seeded random moment, or at a chosen point:
while the heads train in a process pool), then run again with the same command: the rerun resumes and
ends with the same ``results.json`` as an uninterrupted run, times aside, and no process of the killed
run is left behind (issue 28, case 1). Real processes; the tiny presets the other tests use."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dataset_helpers import write_tiny_prepared, write_tiny_splits

REPO = Path(__file__).resolve().parents[2]
_TIMES = ("timings", "time_s", "machine", "wall_s")  # what may differ between two runs of one command


def _env(mark: str) -> dict[str, str]:
    """The environment of a run: every process it starts inherits ``STFN_TEST_MARK``, so survivors are found."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "STFN_TEST_MARK": mark}


def _comparable(obj: Any, out: Path) -> Any:
    """``results.json`` without its times (steps, epochs, samples/s) and with the output folder as ``OUT``."""
    if isinstance(obj, dict):
        return {k: _comparable(v, out) for k, v in obj.items()
                if k not in _TIMES and not k.endswith(("_seconds", "_per_s"))}
    if isinstance(obj, list):
        return [_comparable(v, out) for v in obj]
    return obj.replace(str(out), "OUT") if isinstance(obj, str) else obj


def _survivors(mark: str) -> list[int]:
    """The processes still running with ``STFN_TEST_MARK=mark`` (zombies aside)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (f"STFN_TEST_MARK={mark}".encode() in (proc / "environ").read_bytes().split(b"\0")
                    and "State:\tZ" not in (proc / "status").read_text()):
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


def _kill_then_rerun(cmd: list[str], out: Path, when: Any) -> subprocess.CompletedProcess:
    """Start ``cmd``, SIGKILL it when ``when()`` says so (or as it ends), check that nothing it started
    survives, then run the same command to the end."""
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(cmd, env=_env(mark), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and not when() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10  # the pool's watchdogs look every 0.2 s
    while _survivors(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _survivors(mark), "processes of the killed run are still running"
    done = subprocess.run(cmd, env=_env(uuid.uuid4().hex), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _check_kills(cmd: Any, tmp_path: Path, first_head: str, seed: int) -> None:
    """An uninterrupted run of ``cmd(out)``; a run killed once the first head's ``last.pt`` exists (the
    pool is training) and one killed after a seeded random delay within the whole run's time: each
    rerun ends with the uninterrupted run's results."""
    full = tmp_path / "full"
    start = time.monotonic()
    done = subprocess.run(cmd(full), env=_env(uuid.uuid4().hex), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    took = time.monotonic() - start
    expected = _comparable(json.loads((full / "results.json").read_text()), full)

    in_pool = tmp_path / "in_pool"
    _kill_then_rerun(cmd(in_pool), in_pool, lambda: (in_pool / "runs" / first_head / "last.pt").is_file())
    at_random = tmp_path / "at_random"
    delay = random.Random(seed).uniform(0.2, 0.9) * took
    t0 = time.monotonic()
    _kill_then_rerun(cmd(at_random), at_random, lambda: time.monotonic() - t0 > delay)
    for out in (in_pool, at_random):
        assert _comparable(json.loads((out / "results.json").read_text()), out) == expected, (out.name, delay)


@pytest.mark.slow
def test_compare_killed_at_any_moment_then_rerun_gives_the_same_results(tmp_path: Path) -> None:
    root, splits = write_tiny_prepared(tmp_path / "prepared"), write_tiny_splits(tmp_path / "splits")

    def cmd(out: Path) -> list[str]:  # --threads 2: the heads train two at a time, in a process pool
        return [sys.executable, "-m", "stfn", "compare", str(root), "--splits", str(splits), "--out", str(out),
                "--preset", "tiny", "--no-progress", "--threads", "2"]

    _check_kills(cmd, tmp_path, "temporal_inception", seed=28)


@pytest.mark.slow
def test_demo_killed_at_any_moment_then_rerun_gives_the_same_results(tmp_path: Path) -> None:
    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "stfn", "demo", "--preset", "tiny", "--out", str(out), "--no-progress",
                "--threads", "2"]

    _check_kills(cmd, tmp_path, "temporal_inception", seed=28)
