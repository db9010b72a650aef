"""Tests of ``stfn.study.protocol.train_runs``: runs trained side by side in fresh processes give the
same weights and predictions, bit for bit, as the same runs trained one after another in this process
(the demo's table must not depend on how many cores it ran on); an error in one run reaches the caller
as its own sentence; and how many processes it uses."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from stfn.config import Config
from stfn.engine.checkpoint import load_checkpoint
from stfn.errors import StfnError
from stfn.study.protocol import parallel_processes, train_runs
from suite_helpers import write_features


def _head(features: Path, arch: str, seed: int) -> Config:
    """A two-stream head of ``arch`` on the cached ``features`` (4 classes, 6 positions, 3 epochs)."""
    cfg = Config(name=f"test-{arch}")
    cfg.model.arch, cfg.model.backbone, cfg.model.num_classes = arch, "cnn_small", 4
    cfg.model.freeze_backbone, cfg.model.head.hidden_dim, cfg.model.head.blocks = True, 16, 1
    cfg.model.ts_lstm.hidden_sizes = [32]
    cfg.data.features, cfg.data.frames, cfg.data.num_workers = str(features), 4, 0
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.eval_every = 3, 4, 3e-3, 1
    cfg.train.amp, cfg.train.seed = "none", seed
    return cfg


def _jobs(tmp_path: Path, folder: str) -> list[tuple[str, Config, Path]]:
    features = write_features(tmp_path / "features", frames=6, dim=256)
    return [(f"{arch} {seed}", _head(features, arch, seed), tmp_path / folder / f"{arch}_{seed}")
            for arch, seed in (("stfn", 0), ("ts_lstm", 0), ("stfn", 1))]


@pytest.mark.e2e
def test_side_by_side_equals_one_after_another(tmp_path: Path) -> None:
    """Two processes of one thread each give the weights and per-video scores of the in-process runs."""
    lines: list[str] = []
    alone = train_runs(_jobs(tmp_path, "alone"), processes=1)
    side = train_runs(_jobs(tmp_path, "side"), processes=2, log=lines.append)
    assert torch.get_num_threads() == 1  # the suite's thread count, restored after the in-process runs
    assert [Path(r["out_dir"]).name for r in side] == ["stfn_0", "ts_lstm_0", "stfn_1"]  # the order of the jobs
    for a, b in zip(alone, side, strict=True):
        assert a["last"]["predictions"] == b["last"]["predictions"]
        assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
        wa = load_checkpoint(Path(a["out_dir"]) / "last.pt")["model"]
        wb = load_checkpoint(Path(b["out_dir"]) / "last.pt")["model"]
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert lines[0].strip().startswith("3 runs, 2 at a time")
    assert sum("runs done" in line for line in lines) == 3
    again = train_runs(_jobs(tmp_path, "side"), processes=2, log=lines.append)  # finished runs: resumed, not redone
    assert [r["last"]["predictions"] for r in again] == [r["last"]["predictions"] for r in side]


@pytest.mark.e2e
def test_an_error_in_one_run_is_raised_with_its_sentence(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, "runs")
    broken = copy.deepcopy(jobs[1][1])
    broken.data.features = str(tmp_path / "no_such_features")
    jobs[1] = ("broken", broken, tmp_path / "runs" / "broken")
    with pytest.raises(StfnError, match="no_such_features"):
        train_runs(jobs, processes=2, log=lambda line: None)


def test_parallel_processes() -> None:
    """One process per torch thread (the suite runs with one), at most one per job, one on a GPU."""
    torch.set_num_threads(2)
    assert parallel_processes(18, "cpu") == min(2, len(__import__("os").sched_getaffinity(0)))
    assert parallel_processes(1, "cpu") == 1
    assert parallel_processes(18, "cuda:0") == 1
    torch.set_num_threads(1)
    assert parallel_processes(18, "cpu") == 1


@pytest.mark.e2e
def test_epoch_lines_of_runs_side_by_side_carry_their_label(tmp_path: Path, capfd) -> None:
    """``epoch_lines=True`` (the backbones: minutes per run) prints each run's epoch lines from its own
    process, every line after ``[label]``, and the results match those of the quiet runs."""
    jobs = _jobs(tmp_path, "quiet")[:2]
    quiet = train_runs(jobs, processes=2, log=lambda line: None)
    capfd.readouterr()
    loud = train_runs(_jobs(tmp_path, "loud")[:2], processes=2, log=lambda line: None, epoch_lines=True)
    out = capfd.readouterr().out.splitlines()
    for label in ("stfn 0", "ts_lstm 0"):
        epochs = [line for line in out if line.startswith(f"  [{label}] epoch ")]
        assert [line.split()[3] for line in epochs] == ["1/3", "2/3", "3/3"], out
    assert not [line for line in out if "epoch" in line and not line.startswith("  [")]
    assert [r["last"]["predictions"] for r in loud] == [r["last"]["predictions"] for r in quiet]
