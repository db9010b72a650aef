"""DDP: a 2-process ``torchrun`` (gloo, CPU) run of the tiny config trains, scores every test video
exactly once, and agrees with a single-process evaluation of the checkpoint it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stfn.engine.checkpoint import load_checkpoint
from stfn.engine.distributed import DistInfo, all_true, gather_objects, init_distributed, sum_across
from stfn.engine.evaluate import evaluate_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_single_process_fallbacks() -> None:
    info, device = init_distributed("cpu")
    assert info == DistInfo() and not info.distributed and info.is_main and device.type == "cpu"
    assert gather_objects({"a": 1}) == [{"a": 1}]
    assert all_true(False, device) is False and sum_across([1.0, 2.0], device) == [1.0, 2.0]


@pytest.mark.e2e
def test_torchrun_two_processes_train_and_evaluate_exactly_once(tmp_path, tiny_data) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "stfn", "train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data", tiny_data["root"],
           "--splits", tiny_data["splits_odd"], "--out", str(run), "--no-progress",
           "--set", "train.epochs=1", "--set", "train.batch_size=3"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() and "error_file" not in line]
    assert proc.returncode == 0, "\n".join(errors[:10]) + proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("epoch 1/1") == 1  # only rank 0 reports
    assert "2 process(es)" in proc.stdout

    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1]
    assert all(h["train_samples"] == 24 for h in history)  # 12 per rank, summed
    preds = json.loads((run / "predictions_last.json").read_text())
    ckpt = load_checkpoint(run / "last.pt")
    videos = [p["video"] for p in preds]
    assert len(videos) == len(set(videos)) == 15  # every test video exactly once, no padding duplicate
    assert not set(videos) & set(ckpt["train_videos"]) and len(ckpt["train_videos"]) == 24

    single = evaluate_checkpoint(run / "last.pt", progress=False)
    assert [p["video"] for p in single.predictions] == videos
    assert single.top1 == pytest.approx(history[-1]["val_top1"])
    assert single.mean_class_acc == pytest.approx(history[-1]["val_mean_class_acc"])
    for a, b in zip(preds, single.predictions, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)
