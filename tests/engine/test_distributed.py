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


# ----------------------------------------------------------------------------- another number of processes


def _train(tiny_data: dict[str, str], run: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
    """`stfn train` of the tiny config, under `torchrun --nproc_per_node 2` or as one process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO / "src")}
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if processes == 2 else []
    cmd = [sys.executable, *launch, "-m", "stfn", "train", "--config", str(REPO / "configs" / "tiny.yaml"),
           "--data", tiny_data["root"], "--splits", tiny_data["splits"], "--out", str(run), "--no-progress",
           "--set", "train.eval_every=0", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_the_schedule_of_a_resume_is_put_at_the_epoch_it_resumes() -> None:
    """A 2-process run's epoch ends after its own number of steps: resumed with another number of steps per
    epoch (the global batch rounds differently), the learning rate is this run's at that epoch."""
    import torch

    from stfn.config import TrainConfig
    from stfn.engine.optim import build_scheduler, lr_factor
    from stfn.engine.run_folder import resume_schedule

    tcfg = TrainConfig(epochs=4, lr=0.1, schedule="cosine")
    written = build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), tcfg, 5)
    for _ in range(5):  # epoch 1 of the run that wrote last.pt: 5 steps
        written.optimizer.step()
        written.step()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    optimizer.load_state_dict(written.optimizer.state_dict())
    resumed = build_scheduler(optimizer, tcfg, 3)  # this run: 3 steps per epoch
    resumed.load_state_dict(written.state_dict())
    resume_schedule(resumed, 1, 3)
    assert resumed.last_epoch == 3 and resumed.get_last_lr() == [0.1 * lr_factor(3, tcfg, 3)]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(3, tcfg, 3))
    assert optimizer.param_groups[0]["lr"] != pytest.approx(0.1 * lr_factor(5, tcfg, 3))  # where it was


@pytest.mark.slow
def test_resume_with_another_number_of_processes_keeps_the_global_batch_or_is_refused(tmp_path, tiny_data) -> None:
    """2 processes -> 1 and 1 -> 2 (gloo, CPU): with the same global batch (train.batch_size 3 x 2 processes
    = 6 x 1) the run resumes at the next epoch, every training video seen once per epoch and the schedule
    where a one-process run of that global batch has it; with the per-process batch unchanged (global
    batch 6 -> 3, 3 -> 6) the resume is refused in one sentence naming both."""
    reference = tmp_path / "reference"  # one process, global batch 6, resumed once: the schedule to match
    _ok(_train(tiny_data, reference, 1, "--set", "train.epochs=1", "--set", "train.batch_size=6"))
    _ok(_train(tiny_data, reference, 1, "--set", "train.epochs=2", "--set", "train.batch_size=6", "--resume"))
    expected = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]

    for first, then, per_process in ((2, 1, ("3", "6")), (1, 2, ("6", "3"))):
        run = tmp_path / f"from_{first}_to_{then}"
        _ok(_train(tiny_data, run, first, "--set", "train.epochs=1", "--set", f"train.batch_size={per_process[0]}"))
        assert load_checkpoint(run / "last.pt")["processes"]["world_size"] == first
        refused = _train(tiny_data, run, then, "--set", "train.epochs=2", "--set",
                         f"train.batch_size={per_process[0]}", "--resume")
        assert refused.returncode != 0
        was, now = ("2 processes (global batch 6", "1 process (global batch 3") if first == 2 else (
            "1 process (global batch 6", "2 processes (global batch 12")
        assert f"'{run / 'last.pt'}' was written by {was}: train.batch_size {per_process[0]}" in refused.stderr
        assert f"this run has {now}" in refused.stderr
        assert then == 2 or "Traceback" not in refused.stderr  # torchrun's agent prints its own on a failed rank
        assert load_checkpoint(run / "last.pt")["epoch"] == 1  # nothing lost
        resumed = _train(tiny_data, run, then, "--set", "train.epochs=2", "--set",
                         f"train.batch_size={per_process[1]}", "--resume")
        _ok(resumed)
        assert "resuming" in resumed.stdout and f"{then} process(es)" in resumed.stdout
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [h["epoch"] for h in history] == [1, 2] and all(h["train_samples"] == 24 for h in history)
        assert [h["lr"] for h in history] == pytest.approx([h["lr"] for h in expected])
        ckpt = load_checkpoint(run / "last.pt")
        assert ckpt["scheduler"]["last_epoch"] == load_checkpoint(reference / "last.pt")["scheduler"]["last_epoch"]
        assert ckpt["processes"] == {"world_size": then, "batch_size": int(per_process[1]), "accumulate": 1,
                                     "steps_per_epoch": 4}


# ----------------------------------------------------------------------------- a process lost mid-epoch


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tiny_data: dict[str, str], run: Path, timeout_s: str) -> list[subprocess.Popen]:
    """The two ranks of a 40-epoch training started as torchrun would (its environment), without its agent:
    nothing stops a survivor but the survivor itself."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO / "src"),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "STFN_DIST_TIMEOUT": timeout_s}
    cmd = [sys.executable, "-m", "stfn", "train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data",
           tiny_data["root"], "--splits", tiny_data["splits"], "--out", str(run), "--no-progress",
           "--set", "train.epochs=40", "--set", "train.batch_size=3", "--set", "train.eval_every=0"]
    return [subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_rank_lost_mid_epoch_stops_the_other_with_one_sentence(tmp_path, tiny_data, how) -> None:
    """Rank 1 killed (SIGKILL) or frozen (SIGSTOP: it holds its connections and never answers) in the
    middle of an epoch: rank 0 stops within STFN_DIST_TIMEOUT (5 s here) with one sentence naming what
    happened and what last.pt keeps, and the run resumes from it."""
    import signal
    import time

    run = tmp_path / how
    ranks = _two_ranks(tiny_data, run, "5")
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # into epoch 2 or later
        ranks[1].send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        lost = time.monotonic()
        _, err = ranks[0].communicate(timeout=60)  # without the timeout, a frozen peer: 30 minutes
        waited = time.monotonic() - lost
    finally:
        for proc in ranks:
            proc.kill()
            proc.wait()
    assert ranks[0].returncode == 2, err[-3000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-3000:]
    assert err.startswith("stfn train: error: rank 0 of 2: another process of this training "), err
    if how == "stop":
        assert "did not answer within 5 s (STFN_DIST_TIMEOUT, default 1800)" in err and 4 < waited < 40, (err, waited)
    else:
        assert "was lost (it exited or was killed)" in err and waited < 30, (err, waited)
    assert f"'{run / 'last.pt'}' keeps the last finished epoch: start the run again with --resume" in err
    assert load_checkpoint(run / "last.pt")["epoch"] >= 1


def test_the_timeout_is_read_from_the_environment(monkeypatch) -> None:
    from stfn.engine.distributed import DEFAULT_TIMEOUT_S, timeout_seconds
    from stfn.errors import StfnError

    monkeypatch.delenv("STFN_DIST_TIMEOUT", raising=False)
    assert timeout_seconds() == DEFAULT_TIMEOUT_S == 1800.0
    monkeypatch.setenv("STFN_DIST_TIMEOUT", "7.5")
    assert timeout_seconds() == 7.5
    for bad in ("0", "-3", "soon"):
        monkeypatch.setenv("STFN_DIST_TIMEOUT", bad)
        with pytest.raises(StfnError, match=f"STFN_DIST_TIMEOUT must be a number of seconds above 0 .*got '{bad}'"):
            timeout_seconds()
