"""The crash-tolerant pool: a crashing worker fails only its task, workers die with a killed parent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stfn.data.prepare.manifest import load_manifest
from stfn.data.prepare.pool import run_pool
from stfn.data.prepare.run import prepare_dataset
from stfn.data.prepare.state import STATE_DIR

pytestmark = pytest.mark.timeout(300)

LINUX = sys.platform.startswith("linux")


# --- run_pool on its own (jobs are module-level: the spawned workers import them from here) -----------

_SETUP: dict = {}


def _setup(arg: str, index: int | None) -> None:
    _SETUP.update(arg=arg, index=index)


def _job(task: dict) -> dict:
    if task["crash"]:
        os.kill(os.getpid(), signal.SIGKILL)  # what a decoder segfault looks like to the pool
    return {"value": task["n"] * 2, "pid": os.getpid(), "setup": dict(_SETUP)}


def _crashed(task: dict) -> dict:
    return {"value": None, "crashed": task["n"]}


@pytest.mark.parametrize("workers", [0, 2])
def test_run_pool_hands_every_result_to_done_and_sets_up_each_process(tmp_path: Path, workers: int) -> None:
    tasks = [{"n": n, "crash": False} for n in range(5)]
    results: dict[int, dict] = {}
    run_pool(_job, tasks, lambda t, r: results.setdefault(t["n"], r), _crashed, workers=workers, setup=_setup,
             setup_arg="x", workers_lock=tmp_path / "workers.lock")
    assert {n: r["value"] for n, r in results.items()} == {n: 2 * n for n in range(5)}
    assert {r["setup"]["arg"] for r in results.values()} == {"x"}
    if workers == 0:
        assert {r["pid"] for r in results.values()} == {os.getpid()}
        assert {r["setup"]["index"] for r in results.values()} == {None}
    else:
        assert os.getpid() not in {r["pid"] for r in results.values()}
        assert {r["setup"]["index"] for r in results.values()} <= {0, 1}


@pytest.mark.skipif(not LINUX, reason="uses SIGKILL")
def test_run_pool_a_task_that_kills_its_worker_is_the_only_one_crashed(tmp_path: Path) -> None:
    tasks = [{"n": n, "crash": n == 3} for n in range(8)]
    results: dict[int, dict] = {}
    run_pool(_job, tasks, lambda t, r: results.setdefault(t["n"], r), _crashed, workers=2, setup=_setup,
             setup_arg="x", workers_lock=tmp_path / "workers.lock")
    assert sorted(results) == list(range(8))
    assert results[3] == {"value": None, "crashed": 3}
    assert all(results[n]["value"] == 2 * n for n in range(8) if n != 3)


# --- stfn prepare interrupted (subprocesses) ----------------------------------------------------


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(videos: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "stfn", "prepare", str(videos), str(out), "--workers", "2",
           "--flow", "farneback", "--short-side", "120", "--quiet"]  # 120: the 720p corrupt file shrinks
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_journal(proc: subprocess.Popen, journal: Path, lines: int) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if journal.is_file() and journal.read_text().count("\n") >= lines:
            return
        assert proc.poll() is None, f"prepare ended early: {proc.communicate()}"
        time.sleep(0.02)
    proc.kill()
    pytest.fail("prepare wrote nothing to its journal in 240 s")


@pytest.fixture
def video_many(video_factory, video_shared: Path, tmp_path: Path) -> Path:
    for k in range(10):
        video_factory(f"C{k % 3}/v{k}.mp4", n=40, size=(160, 120), seed=k)
    shutil.copy(video_shared / "corrupted.mp4", tmp_path / "videos" / "C0" / "corrupted.mp4")
    return tmp_path / "videos"


@pytest.mark.skipif(not LINUX, reason="uses /proc and SIGKILL")
@pytest.mark.e2e
def test_kill_9_mid_run_then_resume_gives_complete_consistent_output(
    video_many: Path, tmp_path: Path, frame_counts, check_prepared
) -> None:
    out = tmp_path / "out"
    journal = out / STATE_DIR / "journal.jsonl"
    proc = _start(video_many, out)
    _wait_for_journal(proc, journal, 2)
    workers = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20  # the workers notice that their parent is gone and exit
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "worker processes outlived the killed run"

    done = {json.loads(ln)["key"] for ln in journal.read_text().splitlines() if ln.endswith("}")}
    assert 2 <= len(done) < 11, "the kill did not land mid-run"
    for folder in out.glob("C*/*"):  # what is in place is complete: no partial video folder
        assert frame_counts(folder) == (40, 39, 39)

    s = prepare_dataset(video_many, out, flow="farneback", short_side=120, workers=2, progress=False)
    assert s.done_before == len(done) and s.processed == 11 - len(done)
    expected = {f"C{k % 3}/v{k}": 40 for k in range(10)}
    check_prepared(out, expected, {"C0/corrupted"})
    again = prepare_dataset(video_many, out, flow="farneback", short_side=120, workers=0, progress=False)
    assert again.processed == 0 and again.ok == 10


@pytest.mark.skipif(not LINUX, reason="uses /proc and SIGKILL")
@pytest.mark.e2e
def test_a_crashing_worker_fails_only_its_video_and_the_run_goes_on(video_many: Path, tmp_path: Path, check_prepared) -> None:
    out = tmp_path / "out"
    proc = _start(video_many, out)
    _wait_for_journal(proc, out / STATE_DIR / "journal.jsonl", 1)
    spawned = [p for p in _descendants(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert spawned
    os.kill(spawned[0], signal.SIGKILL)  # what a decoder segfault looks like to the pool
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stderr  # 1: some video failed (the corrupt one)
    assert "10 of 11 videos prepared" in stdout
    check_prepared(out, {f"C{k % 3}/v{k}": 40 for k in range(10)}, {"C0/corrupted"})
    assert "corrupt" in load_manifest(out).videos["C0/corrupted"]["error"]
