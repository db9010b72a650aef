"""Training: plain functions, no runner framework.

:func:`train` runs a whole training from a :class:`~stfn.config.Config` and writes the run folder
(``config.yaml``, ``last.pt`` / ``best.pt``, ``metrics.jsonl`` / ``.csv``, ``predictions_*.json``,
``tb/``: :mod:`stfn.engine.run_folder`).

:func:`stfn.engine.epoch.train_one_epoch` does one pass; :func:`stfn.engine.evaluate.evaluate` scores the test set.
Under ``torchrun`` the model is wrapped in DistributedDataParallel, the training set is sharded
(``stfn.data.datasets.SeededSampler``), the test set is scored exactly once across ranks, and only
rank 0 writes files. ``train.batch_size`` is per process: the effective batch is
``batch_size * world_size * accumulate``.

Reproducibility: each epoch starts from seeds derived from ``(train.seed, epoch, rank)`` (the global
RNGs and the loader's own generator, which seeds its workers) and every training sample is drawn from a
seed of ``(train.seed, epoch, index)``, so a run resumed from ``last.pt`` continues exactly as the
uninterrupted run would, with any number of loader workers (bit for bit with ``train.deterministic``).
``last.pt`` also records the best epoch, so a resume knows it whatever became of ``best.pt``.
"""

from __future__ import annotations

import copy
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from stfn.config import Config, ConfigError, save_config
from stfn.data.datasets import build_loader
from stfn.data.features import build_run_dataset, load_features_meta
from stfn.data.prepare.record import prepare_record
from stfn.engine import checkpoint as ckpt_lib
from stfn.engine import distributed as dist_utils
from stfn.engine.data_identity import check_split_disjoint
from stfn.engine.epoch import EpochStats, NonFiniteLossError, train_one_epoch
from stfn.engine.evaluate import evaluate, make_test_loader
from stfn.engine.hub import is_repo_id
from stfn.engine.meter import epoch_line, epoch_row
from stfn.engine.optim import build_optimizer, build_scheduler, freeze_layers
from stfn.engine.run_folder import (
    TrainResult,
    check_processes,
    open_run_folder,
    processes_record,
    restore_best,
    resume_schedule,
    resume_state,
    run_result,
    save_epoch,
)
from stfn.errors import StfnError
from stfn.models import build_model
from stfn.runtime import resolve_amp, should_compile

__all__ = ["TrainResult", "train"]


def _log(info: dist_utils.DistInfo, text: str) -> None:
    if info.is_main:
        tqdm.write(text, file=sys.stdout)


def _configure_determinism(deterministic: bool) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True


def _init_backbones(model: nn.Module, cfg: Config, info: dist_utils.DistInfo) -> None:
    """Two-stage protocol (``train.init_rgb`` / ``init_flow``) and, for head training on cached
    features, the backbones that made them (so the checkpoint also runs on videos)."""
    for stream, path in (("rgb", cfg.train.init_rgb), ("flow", cfg.train.init_flow)):
        if path:
            if stream not in cfg.model.streams:
                raise ConfigError(f"config key 'train.init_{stream}' is set but model.streams has no '{stream}'")
            ckpt_lib.load_backbone(model, stream, path)
            _log(info, f"initialised the {stream} backbone from '{path}'")
    if cfg.data.features:
        meta = load_features_meta(cfg.data.features)
        if int(meta["feature_dim"]) != int(model.feature_dim):
            raise ConfigError(f"the features in '{cfg.data.features}' have {meta['feature_dim']} channels but "
                              f"model.backbone '{cfg.model.backbone}' gives {model.feature_dim}")
        source = meta.get("source_checkpoint") or ""
        if source and (Path(source).exists() or is_repo_id(source)):
            for stream in cfg.model.streams:
                if not getattr(cfg.train, f"init_{stream}"):
                    ckpt_lib.load_backbone(model, stream, source)
        else:
            _log(info, "note: the backbones that made these features are not in the checkpoint; "
                       "it will only run on cached features")


def _datasets(cfg: Config, info: dist_utils.DistInfo) -> tuple[Any, Any, list[str]]:
    """The training set, the test set (None without evaluation) and the class names; sets
    ``model.num_classes`` from the training set."""
    tcfg = cfg.train
    if tcfg.epochs < 1 or tcfg.batch_size < 1 or tcfg.accumulate < 1:
        raise ConfigError("config keys 'train.epochs', 'train.batch_size' and 'train.accumulate' must be >= 1")
    train_set = build_run_dataset(cfg, "train")
    test_set = build_run_dataset(cfg, "test") if tcfg.eval_every > 0 else None
    classes = list(train_set.classes)
    learnt = set(getattr(train_set, "labels", None) or range(len(classes)))
    unlearnt = [c for i, c in enumerate(classes) if i not in learnt]
    if unlearnt:  # a class listed with no training video (issue 28): trained anyway, said in one sentence
        _log(info, f"warning: class '{unlearnt[0]}' has no training video ({len(unlearnt)} of {len(classes)} "
                   "classes): the model gets an output for it that it never learns")
    if cfg.model.num_classes != len(classes):
        _log(info, f"model.num_classes set to {len(classes)} (the classes of the training set)")
        cfg.model.num_classes = len(classes)
    return train_set, test_set, classes


def _build_network(cfg: Config, fresh: bool, device: torch.device, info: dist_utils.DistInfo) -> nn.Module:
    """The model, seeded identically on every rank, initialised (fresh runs), frozen as configured,
    on ``device`` and in channels_last when ``train.channels_last``."""
    dist_utils.seed_everything(cfg.train.seed)  # same initial weights on every rank
    model = build_model(cfg.model)
    if fresh:
        _init_backbones(model, cfg, info)
    freeze_layers(model, cfg)
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


@dataclass
class _RunRecord:
    """What a run has done so far: restored from ``last.pt`` / ``best.pt`` when resuming."""

    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    best_top1: float = -1.0
    best_epoch: int = 0  # the epoch (1-based) whose weights best.pt holds
    last: dict[str, Any] | None = None


def _restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             scaler: torch.amp.GradScaler, out: Path, info: dist_utils.DistInfo,
             processes: dict[str, int]) -> _RunRecord:
    """Load the weights, optimiser, scheduler, scaler and RNG state of ``last.pt``; the best epoch as
    ``last.pt`` records it (:func:`~stfn.engine.run_folder.restore_best`, which repairs ``best.pt``).
    Weights or optimiser state that do not fit the configured model are one sentence naming them, as is
    another global batch (``processes``: :func:`~stfn.engine.run_folder.check_processes`); another number
    of processes with the same global batch resumes, the schedule put at the same epoch."""
    last = out / "last.pt"
    check_processes(state, processes, last)
    ckpt_lib.load_state(model, state["model"], f"checkpoint '{last}'")
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise StfnError(f"the optimiser or scheduler state of '{last}' does not fit this run's "
                        f"(train.optimizer, train.schedule or frozen layers changed?): {e}") from None
    resume_schedule(scheduler, int(state["epoch"]), processes["steps_per_epoch"])
    if state.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    ckpt_lib.set_rng_state(state["rng"])
    record = _RunRecord(int(state["epoch"]), list(state.get("history") or []), last=dict(state.get("metrics") or {}) or None)
    record.best, record.best_epoch, note = restore_best(out, state, repair=info.is_main)
    if note:
        _log(info, note)
    record.best_top1 = record.best.get("top1", -1.0) if record.best else -1.0
    return record


def _wrap_for_training(model: nn.Module, cfg: Config, device: torch.device, info: dist_utils.DistInfo, frames: int) -> nn.Module:
    """DistributedDataParallel under ``torchrun``, then ``torch.compile`` when ``train.compile`` asks for
    it (``auto``: ``frames`` through each backbone in the epochs left repay it, :func:`should_compile`)."""
    net: nn.Module = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if should_compile(cfg.train.compile, model, device, frames, cfg.data.crop_size, "train"):
        net = torch.compile(net)
    return net


@dataclass
class _TrainingRun:
    """Everything one training run has built, shared by its epochs."""

    cfg: Config
    out: Path
    info: dist_utils.DistInfo
    device: torch.device
    model: nn.Module  # the bare network (checkpoints, evaluation)
    net: nn.Module  # what trains: DDP-wrapped and/or compiled
    loader: Any
    test_loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    steps_per_epoch: int
    classes: list[str]
    provenance: dict[str, Any]  # dataset identity, training videos, how the data was prepared
    criterion: nn.Module
    writer: Any = None


def _train_epoch(run: _TrainingRun, epoch: int, progress: bool) -> EpochStats:
    """:func:`train_one_epoch` with the run's settings, from the seeds of ``(train.seed, epoch, rank)``;
    a non-finite loss is reported with what is kept in the run folder."""
    tcfg = run.cfg.train
    epoch_seed = tcfg.seed + 1_000_003 * (epoch + 1) + 7919 * run.info.rank
    dist_utils.seed_everything(epoch_seed)
    if getattr(run.loader, "generator", None) is not None:  # worker seeds: not from the global RNG
        run.loader.generator.manual_seed(epoch_seed)
    run.loader.sampler.set_epoch(epoch)
    try:
        return train_one_epoch(run.net, run.criterion, run.optimizer, run.scheduler, run.loader, run.device, epoch,
                               run.scaler, amp_dtype=run.amp_dtype, accumulate=tcfg.accumulate,
                               clip_grad=tcfg.clip_grad, partial_bn=tcfg.partial_bn, epochs=tcfg.epochs,
                               progress=progress, writer=run.writer, log_every=tcfg.log_every,
                               global_step=epoch * run.steps_per_epoch)
    except NonFiniteLossError as e:
        last_path = run.out / "last.pt"
        saved = f"epoch {epoch}" if tcfg.save_every == 1 else f"the last saved epoch, every {tcfg.save_every}"
        kept = (f"the last good checkpoint '{last_path}' ({saved}) is kept" if last_path.is_file()
                else "no checkpoint was written")
        raise NonFiniteLossError(f"{e}; training stopped and {kept}; lower train.lr, raise "
                                 "train.warmup_epochs or set train.clip_grad") from None


def _train_evaluate_save(run: _TrainingRun, record: _RunRecord, epoch: int,
                         progress: bool) -> tuple[dict[str, float], bool, bool]:
    """Train one epoch, evaluate when due, save (rank 0). Returns ``(stats, evaluated, is_best)``."""
    tcfg = run.cfg.train
    stats = _train_epoch(run, epoch, progress).to_dict()
    evaluated = run.test_loader is not None and ((epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == tcfg.epochs)
    if evaluated:
        dist_utils.sync_buffers(run.model)
        record.last = evaluate(run.model, run.test_loader, run.device, amp_dtype=run.amp_dtype, progress=progress)
    record.history.append(epoch_row(epoch, stats, record.last if evaluated else None))
    is_best = evaluated and record.last["top1"] > record.best_top1
    if is_best:
        record.best, record.best_top1 = record.last, record.last["top1"]
    if is_best or run.test_loader is None:
        record.best_epoch = epoch + 1
    # last.pt every train.save_every epochs, at the last one and with every new best.pt (which then never
    # holds an epoch after last.pt's); the other epochs write their metrics only
    due = (epoch + 1) % tcfg.save_every == 0 or epoch + 1 == tcfg.epochs or is_best
    if run.info.is_main and not due:
        save_epoch(run.out, None, record.history, record.last if evaluated else None, False, False, run.writer)
    elif run.info.is_main:
        ckpt = ckpt_lib.make_checkpoint(run.model, run.cfg, run.classes, epoch + 1, optimizer=run.optimizer,
                                        scheduler=run.scheduler, scaler=run.scaler, metrics=record.last,
                                        history=record.history, best=record.best, best_epoch=record.best_epoch,
                                        **run.provenance)
        save_epoch(run.out, ckpt, record.history, record.last if evaluated else None, is_best,
                   run.test_loader is None, run.writer)
    return stats, evaluated, is_best


def _setup(cfg: Config, out: Path, resume: bool) -> tuple[_TrainingRun, _RunRecord]:
    """Data, model, optimiser and run folder of a training; restored from ``last.pt`` when resuming."""
    info, device = dist_utils.init_distributed(cfg.train.device)
    _configure_determinism(cfg.train.deterministic)
    tcfg = cfg.train
    train_set, test_set, classes = _datasets(cfg, info)
    state = resume_state(cfg, out, resume)
    identity = dict(getattr(train_set, "identity", {}))
    if state is not None:  # the same data as the run started on, and what its initialisation had seen
        ckpt_lib.check_resume_identity(state, identity, out / "last.pt")
    check_split_disjoint(cfg, train_set, test_set)
    inherited = (state.get("inherited") or {}) if state is not None else ckpt_lib.inheritance(cfg, train_set.videos)
    model = _build_network(cfg, state is None, device, info)
    amp_dtype, use_scaler = resolve_amp(tcfg.amp, device, tcfg.channels_last)
    loader = build_loader(train_set, tcfg.batch_size, train=True, workers=cfg.data.num_workers,
                          distributed=info.distributed, seed=tcfg.seed)
    test_loader = make_test_loader(test_set, cfg, info.distributed) if test_set is not None else None
    steps_per_epoch = math.ceil(len(loader) / tcfg.accumulate)
    optimizer = build_optimizer(model, tcfg)
    scheduler = build_scheduler(optimizer, tcfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    record = _RunRecord()
    processes = processes_record(info.world_size, tcfg.batch_size, tcfg.accumulate, steps_per_epoch)
    if state is not None:
        record = _restore(state, model, optimizer, scheduler, scaler, out, info, processes)
        _log(info, f"resuming '{out}' after epoch {record.start_epoch}")
    del state
    provenance = {"dataset": identity, "train_videos": list(train_set.videos), "prepare": prepare_record(_frames_root(cfg)),
                  "inherited": inherited, "command": _command_line(), "processes": processes}
    run = _TrainingRun(cfg=cfg, out=out, info=info, device=device, model=model, net=model, loader=loader,
                       test_loader=test_loader, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                       amp_dtype=amp_dtype, steps_per_epoch=steps_per_epoch, classes=classes, provenance=provenance,
                       criterion=nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing))
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is slow to import

        run.writer = SummaryWriter(str(out / "tb"), purge_step=record.start_epoch * steps_per_epoch or None)
    frames = len(loader) * tcfg.batch_size * cfg.data.frames * max(0, tcfg.epochs - record.start_epoch)
    run.net = _wrap_for_training(model, cfg, device, info, frames)
    _log(info, f"{cfg.name}: {len(train_set)} training / {len(test_set) if test_set else 0} test videos, "
               f"{len(classes)} classes, {info.world_size} process(es) on {device}, amp "
               f"{amp_dtype or 'off'}{', compiled' if hasattr(run.net, '_orig_mod') else ''}, "
               f"batch {tcfg.batch_size} x {info.world_size} x {tcfg.accumulate}")
    return run, record


def _command_line() -> str:
    """How this process was started, ``stfn train --config ...`` for the CLI (the model card's recipe)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return shlex.join(["stfn" if program in ("stfn", "__main__.py") else program, *sys.argv[1:]])


def _frames_root(cfg: Config) -> str:
    """The prepared frames folder the training videos came from, through the features folder's record
    when the run trains on cached features."""
    if cfg.data.features:
        return load_features_meta(cfg.data.features).get("data", {}).get("root", "")
    return cfg.data.root


def train(cfg: Config, out_dir: str | os.PathLike, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the whole training described by ``cfg``; write the run folder (module docstring).

    ``resume=True`` continues from ``out_dir/last.pt`` when it exists (else starts fresh); without
    it an existing ``last.pt`` is an error, so a run is never overwritten by accident. Returns
    ``{"best": metrics, "last": metrics, "history": [...], "checkpoint": best.pt path, "out_dir"}``
    where metrics are :func:`~stfn.engine.evaluate.evaluate`'s (with ``predictions`` when known).
    """
    cfg, out = copy.deepcopy(cfg), Path(out_dir)
    with open_run_folder(out, is_main=int(os.environ.get("RANK", "0")) == 0) as stale:
        for path in stale:
            tqdm.write(f"removed '{path}', left by a write that was killed", file=sys.stdout)
        run, record = _setup(cfg, out, resume)
        epochs, start, epoch = cfg.train.epochs, time.perf_counter(), record.start_epoch
        try:
            for epoch in range(record.start_epoch, epochs):
                stats, evaluated, is_best = _train_evaluate_save(run, record, epoch, progress)
                left = (time.perf_counter() - start) / (epoch + 1 - record.start_epoch) * (epochs - epoch - 1)
                _log(run.info, epoch_line(epoch, epochs, stats, record.last if evaluated else None, is_best, left))
                dist_utils.barrier()
        except RuntimeError as e:  # a peer that died or hangs: one sentence, not a gloo/NCCL traceback
            if not (run.info.distributed and dist_utils.is_collective_failure(e)):
                raise
            raise StfnError(dist_utils.lost_peer_message(e, run.info, epoch + 1, out / "last.pt")) from None
        finally:
            if run.writer is not None:
                run.writer.close()
    return run_result(out, record.best, record.last, record.history)
