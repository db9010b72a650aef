"""`stfn prepare --shard auto` (two shards from torchrun's RANK / WORLD_SIZE) where one shard is killed
with SIGKILL and run again: the rerun completes and the merged manifest, the shard manifests, the list
files and the frames are those of an uninterrupted prepare (issue 28, case 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stfn.data.prepare.manifest import load_manifest
from stfn.data.prepare.state import STATE_DIR

REPO = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.timeout(300), pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL")]


def _shard(videos: Path, out: Path, rank: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "RANK": str(rank),
           "WORLD_SIZE": "2"}
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_ARRAY")}
    cmd = [sys.executable, "-m", "stfn", "prepare", str(videos), str(out), "--shard", "auto", "--workers", "1",
           "--flow", "farneback", "--quiet"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err


def _contents(out: Path) -> dict[str, object]:
    """What a prepared folder holds, times aside: each manifest, the list files, every frame file's size."""
    found: dict[str, object] = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("manifest*.json"))}
    found["merged"] = load_manifest(out).videos
    found.update({p.name: p.read_text() for p in sorted(out.glob("*.txt"))})
    found["files"] = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*.jpg"))}
    return found


@pytest.mark.slow
def test_a_shard_killed_then_rerun_gives_the_uninterrupted_prepare(video_factory, tmp_path: Path) -> None:
    for k in range(8):
        video_factory(f"C{k % 2}/v{k}.mp4", n=30, size=(96, 72), seed=k)
    videos = tmp_path / "videos"
    full = tmp_path / "full"
    for rank in (0, 1):
        _finish(_shard(videos, full, rank))

    out = tmp_path / "killed"
    first, second = _shard(videos, out, 0), _shard(videos, out, 1)
    journal = out / STATE_DIR / "journal-shard1of2.jsonl"
    deadline = time.monotonic() + 120
    while not (journal.is_file() and journal.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        assert second.poll() is None, second.communicate()
        time.sleep(0.01)
    second.kill()  # SIGKILL, one video of four done
    second.wait(timeout=30)
    _finish(first)
    assert not (out / "manifest-shard1of2.json").is_file() or len(
        json.loads((out / "manifest-shard1of2.json").read_text())["videos"]) < 4, "the kill came too late"
    _finish(_shard(videos, out, 1))  # the same command again
    assert len(load_manifest(out).videos) == 8
    assert _contents(out) == _contents(full)
