"""Training on tiny in-memory videos with the real cnn_small STFN: overfitting, resume, NaN stop."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from engine_helpers import tiny_config

import stfn.models
from stfn.engine import train as train_mod
from stfn.engine.checkpoint import load_checkpoint
from stfn.engine.epoch import NonFiniteLossError
from stfn.engine.evaluate import evaluate
from stfn.engine.train import train
from stfn.errors import StfnError


def test_tiny_run_overfits_and_writes_the_run_folder(tmp_path, fake_data) -> None:
    cfg = tiny_config(epochs=6, lr=3e-3, schedule="constant")
    result = train(cfg, tmp_path / "run", progress=True)
    run = tmp_path / "run"
    # 100% training accuracy: the final model classifies every training video right (test-mode views)
    from stfn.data.datasets import build_loader
    from stfn.engine.checkpoint import load_model

    model, cfg2, ckpt = load_model(run / "last.pt")
    train_as_test = fake_data()(cfg2, "train")
    train_as_test.subset, train_as_test.views = "test", 1
    m = evaluate(model, build_loader(train_as_test, 4, train=False, workers=0), torch.device("cpu"))
    assert m["top1"] == 100.0 and m["n"] == 16
    assert result.history[-1]["train_top1"] > result.history[0]["train_top1"]
    # run folder
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 6 and saved["model"]["num_classes"] == 4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["train_loss"] > rows[-1]["train_loss"]
    assert {"lr", "train_top1", "train_samples_per_s", "val_top1", "val_top5", "val_mean_class_acc"} <= set(rows[0])
    assert len(list(csv.DictReader((run / "metrics.csv").open()))) == 6
    assert list((run / "tb").glob("events.out.tfevents.*"))
    preds = json.loads((run / "predictions_last.json").read_text())
    assert sorted(p["video"] for p in preds) == sorted(fake_data()(cfg, "test").videos)
    best = load_checkpoint(run / "best.pt")
    assert best["metrics"]["top1"] == max(r["val_top1"] for r in rows) == result.best["top1"]
    assert ckpt["epoch"] == 6 and ckpt["train_videos"] == fake_data()(cfg, "train").videos
    assert result.checkpoint == str(run / "best.pt") and len(result.best["predictions"]) == 8
    # a second run into the same folder is refused unless resumed; resuming a finished run is a no-op
    with pytest.raises(StfnError, match="already holds a checkpoint; pass --resume"):
        train(cfg, run, progress=False)
    again = train(cfg, run, resume=True, progress=False)
    assert again.history == result.history and again.best["top1"] == result.best["top1"]


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, fake_data, monkeypatch) -> None:
    cfg = tiny_config(epochs=2, deterministic=True, lr=3e-3)
    cfg.model.head.dropout = 0.3  # the model's own randomness must be restored too
    full = train(cfg, tmp_path / "full", progress=False)

    real = train_mod.train_one_epoch

    def killed_in_epoch_2(model, criterion, optimizer, scheduler, loader, device, epoch, *args, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(model, criterion, optimizer, scheduler, loader, device, epoch, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "part", progress=False)
    assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    resumed = train(cfg, tmp_path / "part", resume=True, progress=False)

    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 8
    for key in ("train_loss", "val_top1"):
        assert [h[key] for h in full.history] == [h[key] for h in resumed.history]


def test_save_every_skips_last_pt_between_saves_and_a_kill_resumes_from_the_last_saved(
        tmp_path, fake_data, monkeypatch) -> None:
    """``train.save_every: 2`` over 3 epochs (evaluated at the last only): last.pt after epochs 2 and 3,
    the metrics after each; a kill in epoch 3 resumes after epoch 2, and one in epoch 2 (nothing saved
    yet) starts again; both end equal to the uninterrupted run."""
    cfg = tiny_config(epochs=3, deterministic=True, save_every=2, eval_every=3)
    full = train(cfg, tmp_path / "full", progress=False)
    assert load_checkpoint(tmp_path / "full" / "last.pt")["epoch"] == 3
    real = train_mod.train_one_epoch
    for killed_at, saved in ((2, 2), (1, None)):
        def killed(model, criterion, optimizer, scheduler, loader, device, epoch, *args, _at=killed_at, **kwargs):
            if epoch == _at:
                raise KeyboardInterrupt
            return real(model, criterion, optimizer, scheduler, loader, device, epoch, *args, **kwargs)

        out = tmp_path / f"killed{killed_at}"
        monkeypatch.setattr(train_mod, "train_one_epoch", killed)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, out, progress=False)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == list(range(1, killed_at + 1))  # every finished epoch's metrics
        if saved is None:
            assert not (out / "last.pt").exists()
        else:
            assert load_checkpoint(out / "last.pt")["epoch"] == saved
        monkeypatch.setattr(train_mod, "train_one_epoch", real)
        resumed = train(cfg, out, resume=True, progress=False)
        a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(out / "last.pt")
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


def _kill_in_epoch_2(monkeypatch):
    """Make ``train`` raise KeyboardInterrupt half-way through epoch 2 (after two of its batches)."""
    real = train_mod.train_one_epoch

    def killed(model, criterion, optimizer, scheduler, loader, device, epoch, *args, **kwargs):
        if epoch != 1:
            return real(model, criterion, optimizer, scheduler, loader, device, epoch, *args, **kwargs)

        class Half:  # the loader, cut after two batches, then the kill
            sampler = loader.sampler

            def __len__(self):
                return len(loader)

            def __iter__(self):
                for i, batch in enumerate(loader):
                    if i == 2:
                        raise KeyboardInterrupt
                    yield batch

        return real(model, criterion, optimizer, scheduler, Half(), device, epoch, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", killed)
    return real


@pytest.mark.slow  # about 12 s: three trainings, two of them with worker processes
def test_resume_with_loader_workers_is_bit_identical_and_workers_do_not_change_the_weights(
        tmp_path, fake_data, monkeypatch) -> None:
    """Issue 17 item 1: with 2 loader workers, a run killed in the middle of epoch 2 and resumed ends
    with the tensors of an uninterrupted run, and those of a run without workers (the loader's own
    generator: worker seeds do not consume the global RNG that dropout draws from)."""
    cfg = tiny_config(epochs=2, deterministic=True, lr=3e-3)
    cfg.model.head.dropout = 0.3
    train(cfg, tmp_path / "w0", progress=False)
    cfg.data.num_workers = 2
    train(cfg, tmp_path / "w2", progress=False)
    real = _kill_in_epoch_2(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "part", progress=False)
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    train(cfg, tmp_path / "part", resume=True, progress=False)
    ref = load_checkpoint(tmp_path / "w2" / "last.pt")["model"]
    for other in ("part", "w0"):
        got = load_checkpoint(tmp_path / other / "last.pt")["model"]
        differ = [k for k in ref if not torch.equal(ref[k], got[k])]
        assert not differ, f"{other}: {len(differ)} of {len(ref)} tensors differ"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, fake_data, monkeypatch) -> None:
    real_build = stfn.models.build_model
    calls = {"n": 0}

    def build_with_nan_after_epoch_1(cfg):
        model = real_build(cfg)

        def poison(module, inputs, output):
            calls["n"] += 1 if module.training else 0
            return output * float("nan") if module.training and calls["n"] > 4 else output  # 4 batches/epoch

        model.head.register_forward_hook(poison)
        return model

    monkeypatch.setattr(train_mod, "build_model", build_with_nan_after_epoch_1)
    cfg = tiny_config(epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite \(nan\) at epoch 2, batch 1.*last good checkpoint "
                                                 r"'.*last\.pt' \(epoch 1\) is kept"):
        train(cfg, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_accumulation_bf16_and_label_smoothing(tmp_path, fake_data) -> None:
    cfg = tiny_config(epochs=1, accumulate=2, amp="bf16", label_smoothing=0.1, optimizer="sgd", lr=0.01,
                      clip_grad=1.0, partial_bn=True, channels_last=True)
    cfg.train.eval_every = 0  # no validation: best.pt is the last epoch
    result = train(cfg, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["scheduler"]["last_epoch"] == 2  # 4 batches, one optimiser step per 2
    assert result.best is None and (tmp_path / "run" / "best.pt").is_file()
    assert "val_top1" not in result.history[0]
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))


def test_two_stage_initialises_backbones_from_single_stream_runs(tmp_path, fake_data) -> None:
    rgb = tiny_config(streams=["rgb"], epochs=1)
    rgb.train.eval_every = 0
    train(rgb, tmp_path / "rgb", progress=False)
    rgb_weights = load_checkpoint(tmp_path / "rgb" / "last.pt")["model"]
    two = tiny_config(epochs=1, lr=0.0, init_rgb=str(tmp_path / "rgb" / "last.pt"))
    two.train.eval_every = 0
    two.train.optimizer = "sgd"
    train(two, tmp_path / "two", progress=False)
    got = load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    conv = "backbones.rgb.net.features.0.weight"
    assert torch.equal(got[conv], rgb_weights[conv])  # lr 0: still the single-stream weights
    bad = tiny_config(epochs=1, init_flow=str(tmp_path / "rgb" / "last.pt"))
    with pytest.raises(StfnError, match=r"rgb/last\.pt' has no 'flow' backbone"):
        train(bad, tmp_path / "bad", progress=False)


def _scripted_top1(monkeypatch, values: list[float]) -> None:
    """Make the validation top-1 of epoch e be ``values[e]`` (the rest of the metrics are real)."""
    calls = {"n": 0}

    def scripted(*args, **kwargs):
        metrics = evaluate(*args, **kwargs)
        metrics["top1"] = values[calls["n"]]
        calls["n"] += 1
        return metrics

    monkeypatch.setattr(train_mod, "evaluate", scripted)


def test_a_crash_between_last_pt_and_best_pt_keeps_the_best_epoch(tmp_path, fake_data, monkeypatch) -> None:
    """Issue 17 item 7: killed after last.pt of the best epoch (2) but before best.pt; the resume
    rewrites best.pt from last.pt and knows the true best, so epoch 3 (worse than 2) does not replace it."""
    from stfn.engine import run_folder

    _scripted_top1(monkeypatch, [50.0, 75.0, 60.0])
    real_save = run_folder.ckpt_lib.save_checkpoint

    def killed_before_best_of_epoch_2(ckpt, path):
        if path.name == "best.pt" and ckpt["epoch"] == 2:
            raise KeyboardInterrupt
        real_save(ckpt, path)

    monkeypatch.setattr(run_folder.ckpt_lib, "save_checkpoint", killed_before_best_of_epoch_2)
    cfg = tiny_config(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 1
    monkeypatch.setattr(run_folder.ckpt_lib, "save_checkpoint", real_save)
    _scripted_top1(monkeypatch, [60.0])
    result = train(cfg, tmp_path / "run", resume=True, progress=False)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["epoch"] == 2 and best["metrics"]["top1"] == 75.0
    assert result.best["top1"] == 75.0 and load_checkpoint(tmp_path / "run" / "last.pt")["best_epoch"] == 2


def test_a_corrupt_best_pt_does_not_block_resume(tmp_path, fake_data, monkeypatch, capsys) -> None:
    """Issue 17 item 10: best.pt unreadable, last.pt intact: the resume says so and goes on; the next
    epoch that beats the best recorded in last.pt writes a new best.pt."""
    _scripted_top1(monkeypatch, [75.0, 50.0])
    cfg = tiny_config(epochs=2)
    train(cfg, tmp_path / "run", progress=False)
    (tmp_path / "run" / "best.pt").write_bytes(b"\x00garbage" * 100)
    cfg.train.epochs = 4
    _scripted_top1(monkeypatch, [70.0, 80.0])
    result = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert "should hold the best epoch 1" in capsys.readouterr().out
    assert result.best["top1"] == 80.0 and load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 4


def test_a_full_disk_during_training_is_one_sentence_and_resumable(tmp_path, fake_data, monkeypatch) -> None:
    """Issue 17 item 5: torch.save fails on a full disk while saving epoch 2 (a RuntimeError of its zip
    writer); the run stops with one sentence naming the file and what is kept, leaves no temporary
    file, and resumes once there is space."""
    import shutil

    from stfn import fileio

    real_save, real_usage, calls = torch.save, shutil.disk_usage, {"n": 0}

    def full_on_the_second_checkpoint(obj, f):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 1: last.pt, best.pt; epoch 2: last.pt
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", full_on_the_second_checkpoint)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    cfg = tiny_config(epochs=2)
    run = tmp_path / "run"
    with pytest.raises(StfnError, match=r"cannot save epoch 2 to '.*last\.pt': No space left on device; "
                                         r"'.*last\.pt' holds epoch 1: .*stfn train --out .* --resume`$"):
        train(cfg, run, progress=False)
    assert not list(run.glob(".*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    monkeypatch.setattr(fileio.shutil, "disk_usage", real_usage)
    assert train(cfg, run, resume=True, progress=False).history[-1]["epoch"] == 2


def test_the_run_folder_is_checked_and_stale_temporary_files_removed(tmp_path, fake_data) -> None:
    """Issue 17 items 5 and 10: --out naming a file is one sentence before any work; a resume removes the
    `.last.pt.*.tmp` a kill during a checkpoint write left (only files of the run's own names)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(StfnError, match=r"run folder '.*a_file' is a file, not a folder"):
        train(tiny_config(epochs=1), a_file, progress=False)
    run = tmp_path / "run"
    train(tiny_config(epochs=1), run, progress=False)
    stale, other = run / ".last.pt.3f9a0c1d.tmp", run / ".notes.txt.3f9a0c1d.tmp"
    stale.write_bytes(b"\0" * 1000)
    other.write_bytes(b"mine")
    train(tiny_config(epochs=1), run, resume=True, progress=False)
    assert not stale.exists() and other.exists()


def test_resume_from_a_last_pt_whose_shapes_do_not_fit_is_one_sentence(tmp_path, fake_data) -> None:
    """Issue 17 item 9: a last.pt whose tensors do not fit the configured model (same config, other
    shapes) used to end in load_state_dict's traceback; now one sentence names the tensor and shapes."""
    from stfn.engine.checkpoint import save_checkpoint

    cfg = tiny_config(epochs=2)
    run = tmp_path / "run"
    train(tiny_config(epochs=1), run, progress=False)
    state = load_checkpoint(run / "last.pt")
    key = next(k for k in state["model"] if k.endswith("weight") and state["model"][k].dim() == 2)
    state["model"][key] = torch.zeros(3, 5)
    save_checkpoint(state, run / "last.pt")
    with pytest.raises(StfnError, match=rf"checkpoint '.*last\.pt' does not fit the model: shapes differ for 1 "
                                        rf"tensor\(s\), e\.g\. {key} \(3, 5\) vs \(\d+, \d+\)"):
        train(cfg, run, resume=True, progress=False)


def test_a_second_training_into_a_folder_in_use_is_refused(tmp_path, fake_data) -> None:
    """The run folder is locked while a training uses it, so that removing stale temporary files can
    never remove the one a live training is writing."""
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(  # another process holds the lock, as a running training would
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)", str(run / ".stfn-train.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StfnError, match=r"another stfn train is using run folder '.*run'"):
            train(tiny_config(epochs=1), run, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert train(tiny_config(epochs=1), run, progress=False).history[-1]["epoch"] == 1


def test_a_refused_config_leaves_no_run_folder_behind(tmp_path, fake_data) -> None:
    """A run refused before it wrote anything (here ``train.epochs: 0``) leaves no folder holding only
    its lock; a folder that was there before stays."""
    cfg = tiny_config(epochs=1)
    cfg.train.epochs = 0
    with pytest.raises(StfnError, match="train.epochs"):
        train(cfg, tmp_path / "runs" / "new", progress=False)
    assert not (tmp_path / "runs" / "new").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(StfnError, match="train.epochs"):
        train(cfg, tmp_path / "old", progress=False)
    assert (tmp_path / "old").is_dir() and list((tmp_path / "old").iterdir()) == []
