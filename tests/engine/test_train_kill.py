"""`stfn train` killed with SIGKILL in the middle of an epoch, with loader workers, then `--resume`d:
the same tensors as an uninterrupted run (issue 17, item 1). Real processes, real prepared data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")


def _command(tiny_data: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stfn", "train", "--config", TINY, "--data", tiny_data["root"], "--splits",
            tiny_data["splits"], "--out", str(out), "--no-progress", "--set", "train.epochs=3",
            "--set", "train.deterministic=true", "--set", "data.num_workers=2", "--set", "train.eval_every=0", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def _epochs_done(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.mark.slow
def test_kill_9_in_epoch_2_with_loader_workers_then_resume_is_bit_identical(tmp_path: Path, tiny_data) -> None:
    full = tmp_path / "full"
    subprocess.run(_command(tiny_data, full), env=_env(), check=True, capture_output=True, timeout=600)
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    half_epoch = rows[1]["train_seconds"] / 2

    part = tmp_path / "part"
    proc = subprocess.Popen(_command(tiny_data, part), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _epochs_done(part) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(half_epoch)
        proc.kill()  # SIGKILL: no handler runs
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _epochs_done(part) == 1, "the kill did not land in epoch 2"
    done = subprocess.run(_command(tiny_data, part, "--resume"), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout

    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(part / "last.pt", weights_only=True)
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"{len(differ)} of {len(a['model'])} tensors differ"
    assert a["epoch"] == b["epoch"] == 3
