"""The run folder of a training, as :func:`stfn.engine.train.train` writes and resumes it::

    RUN/config.yaml                resolved config (num_classes set from the data)
    RUN/last.pt, RUN/best.pt       checkpoints (every epoch / best validation top-1), atomic
    RUN/metrics.jsonl, metrics.csv one row per epoch (train loss/accuracy/lr/speed, validation)
    RUN/predictions_last.json      per-video scores of the latest validation (and _best.json)
    RUN/tb/                        TensorBoard scalars
    RUN/.stfn-train.lock           held by the training that is using the folder
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stfn.config import Config, config_to_dict
from stfn.engine import checkpoint as ckpt_lib
from stfn.errors import StfnError
from stfn.fileio import atomic_copy, atomic_write_json, atomic_write_text, check_writable, remove_stale_temps

__all__ = ["LOCK_FILE", "RUN_FILES", "TrainResult", "check_processes", "first_difference", "open_run_folder",
           "processes_record", "restore_best", "resume_schedule", "resume_state", "run_result", "save_epoch",
           "write_history"]

RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "predictions_last.json",
             "predictions_best.json")


LOCK_FILE = ".stfn-train.lock"


@contextlib.contextmanager
def open_run_folder(out: Path, is_main: bool = True) -> Iterator[list[Path]]:
    """For the whole of a training, on rank 0 (``is_main``): one sentence unless ``out`` can be written
    as a folder, an exclusive lock on ``out/.stfn-train.lock`` (another training into the same folder is
    refused; the lock goes with the process, even after ``kill -9``, and its forked loader workers do not
    hold it), then the removal of the temporary
    files a kill during a write of a run file left (``.last.pt.<hex>.tmp``, as large as a checkpoint:
    no live write can own them while the lock is held). Yields the paths removed."""
    if not is_main:
        yield []
        return
    check_writable(out, "run folder", folder=True)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a") as lock:
        try:
            import fcntl  # POSIX only: elsewhere no lock
        except ImportError:
            fcntl = None
        if fcntl is not None:
            try:  # a POSIX record lock: the process's own, not shared with the loader workers it forks
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise StfnError(f"another stfn train is using run folder '{out}' (it holds '{out / LOCK_FILE}'); "
                                "wait for it to end or choose another --out") from None
        try:
            yield remove_stale_temps(out, RUN_FILES)
        except BaseException:
            _forget_empty(out, created)  # refused before it wrote anything: leave no folder behind
            raise


def _forget_empty(out: Path, created: bool) -> None:
    """Remove the lock of a run that wrote nothing, and ``out`` itself when this run created it."""
    if [p.name for p in out.iterdir()] == [LOCK_FILE]:
        (out / LOCK_FILE).unlink(missing_ok=True)
        if created:
            out.rmdir()


def write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl`` and ``metrics.csv`` rewritten from the whole history (atomic)."""
    atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    atomic_write_text(out_dir / "metrics.csv", buf.getvalue())


def first_difference(a: Any, b: Any, prefix: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = first_difference(a.get(k), b.get(k), f"{prefix}.{k}")
            if d:
                return d
        return None
    return None if a == b else f"{prefix} ({a!r} in the run folder, {b!r} now)"


def resume_state(cfg: Config, out: Path, resume: bool) -> dict[str, Any] | None:
    """``out/last.pt`` when resuming a run of the same model; None for a fresh run."""
    last_path = out / "last.pt"
    if not last_path.is_file():
        return None
    if not resume:
        raise StfnError(f"run folder '{out}' already holds a checkpoint; pass --resume to continue it "
                        "or choose another --out")
    state = ckpt_lib.load_checkpoint(last_path)
    saved, now = dict(state["config"]["model"]), config_to_dict(cfg)["model"]
    saved["pretrained"] = now["pretrained"]  # only matters before the first epoch
    diff = first_difference(saved, now, "model")
    if diff:
        raise StfnError(f"cannot resume '{last_path}': the model config differs at {diff}")
    return state


def processes_record(world_size: int, batch_size: int, accumulate: int, steps_per_epoch: int) -> dict[str, int]:
    """How a run is spread, as ``last.pt`` records it (``processes``): the global batch of one optimiser
    step is ``batch_size * world_size * accumulate``."""
    return {"world_size": int(world_size), "batch_size": int(batch_size), "accumulate": int(accumulate),
            "steps_per_epoch": int(steps_per_epoch)}


def _described(rec: dict[str, Any]) -> str:
    n, batch, acc = int(rec["world_size"]), int(rec["batch_size"]), int(rec["accumulate"])
    return (f"{n} process{'es' if n > 1 else ''} (global batch {batch * n * acc}: train.batch_size {batch} x "
            f"{n} x train.accumulate {acc})")


def check_processes(state: dict[str, Any], now: dict[str, int], last_path: Path) -> None:
    """Refuse, in one sentence, to resume ``state`` (its ``last.pt``) with another global batch than the
    one it was trained with (another number of processes, ``train.batch_size`` or ``train.accumulate``).

    The rest carries over to any number of processes: a resume starts at an epoch boundary, where the
    sampler's position is the epoch alone (its order comes from ``(train.seed, epoch)`` and is sharded
    over the ranks), and :func:`resume_schedule` puts the schedule at the same epoch. A checkpoint of an
    older version, without the record, is not checked."""
    old = state.get("processes") or {}
    if not old:
        return
    def global_batch(rec: dict[str, Any]) -> int:
        return int(rec["batch_size"]) * int(rec["world_size"]) * int(rec["accumulate"])

    if global_batch(old) != global_batch(now):
        raise StfnError(f"'{last_path}' was written by {_described(old)}; this run has {_described(now)}: "
                        f"resume with the same global batch (set train.batch_size or train.accumulate so that "
                        f"their product with the number of processes is {global_batch(old)}), or start a new run "
                        "in another --out")


def resume_schedule(scheduler: Any, epoch: int, steps_per_epoch: int) -> None:
    """Put a per-step ``LambdaLR`` restored from ``last.pt`` at the first step of epoch ``epoch`` of this
    run: its saved step counts the steps of the run that wrote it, which differ when the training set
    is shared by another number of processes (a 2-process run's epoch 1 ends at half the steps of one
    process's), so the learning rate would otherwise jump back or ahead in the schedule."""
    step = int(epoch) * int(steps_per_epoch)
    if scheduler.last_epoch == step:
        return
    scheduler.last_epoch = step
    lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs


def _held_epoch(path: Path) -> tuple[int | None, str]:
    """The epoch a checkpoint holds, or None and why (missing, unreadable)."""
    if not path.is_file():
        return None, "it does not exist"
    try:
        return int(ckpt_lib.load_checkpoint(path).get("epoch") or 0), ""
    except ckpt_lib.CheckpointError as e:
        return None, str(e)


def restore_best(out: Path, state: dict[str, Any], repair: bool = True) -> tuple[dict[str, Any] | None, int, str]:
    """``(best metrics, best epoch, note)`` of a run resumed from ``state`` (its ``last.pt``).

    ``last.pt`` records the best validation and its epoch, so a resume knows the true best whatever
    became of ``best.pt``: when a crash came between writing ``last.pt`` and ``best.pt`` of the best
    epoch, ``best.pt`` is rewritten from ``last.pt`` (which holds those weights); a ``best.pt`` that
    is missing or unreadable for an older epoch cannot be rebuilt and ``note`` says so (the next
    epoch that beats the recorded best replaces it). Checkpoints of older versions without the record
    read ``best.pt``'s own metrics; an unreadable one is then a note, not an error. ``repair=False``
    (ranks other than 0) reads the record and writes no file.
    """
    best_path = out / "best.pt"
    if not repair and "best_epoch" in state:
        return dict(state.get("best") or {}) or None, int(state.get("best_epoch") or 0), ""
    if "best_epoch" not in state:
        if not best_path.is_file():
            return None, 0, ""
        try:
            return dict(ckpt_lib.load_checkpoint(best_path).get("metrics") or {}) or None, 0, ""
        except ckpt_lib.CheckpointError as e:
            return None, 0, f"warning: {e}; the next evaluated epoch will replace it"
    best, best_epoch = dict(state.get("best") or {}) or None, int(state["best_epoch"])
    if best_epoch < 1:
        return best, best_epoch, ""
    held, why = _held_epoch(best_path)
    if held == best_epoch:
        return best, best_epoch, ""
    if best_epoch == int(state["epoch"]):
        atomic_copy(out / "last.pt", best_path)
        write_history(out, list(state.get("history") or []))
        return best, best_epoch, f"'{best_path}' rewritten from '{out / 'last.pt'}' (the best epoch, {best_epoch})"
    found = why or f"it holds epoch {held}"
    return best, best_epoch, (f"warning: '{best_path}' should hold the best epoch {best_epoch} but {found}; "
                              "the next epoch that beats it will replace it")


def save_epoch(out: Path, ckpt: dict[str, Any] | None, history: list[dict[str, Any]], metrics: dict[str, Any] | None,
               is_best: bool, always_best: bool, writer: Any) -> None:
    """Rank 0, after an epoch: ``last.pt`` (and ``best.pt`` when ``is_best`` or ``always_best``; neither
    when ``ckpt`` is None, an epoch ``train.save_every`` skips), the metrics files, the predictions of
    ``metrics`` (this epoch's evaluation, or None), TensorBoard.

    An OS error (a full disk) is one :class:`StfnError` naming the file, what ``last.pt`` holds (the
    writes are atomic: the files of the epoch before are intact) and the command that resumes."""
    try:
        _save_epoch(out, ckpt, history, metrics, is_best, always_best, writer)
    except OSError as e:
        if ckpt is None:  # an epoch that train.save_every skips: its metrics files failed
            epoch = len(history)
            kept = (f"'{out / 'last.pt'}' holds the last saved epoch" if (out / "last.pt").is_file()
                    else "no epoch was saved")
        else:
            epoch = int(ckpt["epoch"])
            saved = epoch - (Path(str(e.filename)).name == "last.pt")  # last.pt is written first
            kept = f"'{out / 'last.pt'}' holds epoch {saved}" if saved else "no epoch was saved"
        raise StfnError(f"cannot save epoch {epoch} to '{e.filename or out}': {e.strerror or e}; {kept}: "
                        f"free some space and continue with `stfn train --out {out} --resume`") from None


def _save_epoch(out: Path, ckpt: dict[str, Any] | None, history: list[dict[str, Any]],
                metrics: dict[str, Any] | None, is_best: bool, always_best: bool, writer: Any) -> None:
    if ckpt is not None:
        ckpt_lib.save_checkpoint(ckpt, out / "last.pt")
        if is_best or always_best:
            ckpt_lib.save_checkpoint(ckpt, out / "best.pt")
    write_history(out, history)
    row = history[-1]
    if metrics is not None:
        atomic_write_json(out / "predictions_last.json", metrics["predictions"], indent=None)
        if is_best:
            atomic_write_json(out / "predictions_best.json", metrics["predictions"], indent=None)
    for k, v in row.items():
        if k != "epoch":
            writer.add_scalar(k.replace("train_", "train/", 1).replace("val_", "val/", 1), v, row["epoch"])
    writer.flush()


@dataclass(frozen=True)
class TrainResult:
    """What :func:`stfn.engine.train.train` returns: the ``best`` and ``last`` evaluation metrics
    (:func:`~stfn.engine.evaluate.evaluate`'s dict, with ``predictions``; ``None`` without evaluation),
    one ``history`` row per epoch (as in ``metrics.jsonl``), the ``checkpoint`` path (``best.pt``) and the
    run folder ``out_dir``."""

    best: dict[str, Any] | None
    last: dict[str, Any] | None
    history: list[dict[str, Any]]
    checkpoint: str
    out_dir: str

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best, "last": self.last, "history": self.history, "checkpoint": self.checkpoint,
                "out_dir": self.out_dir}


def run_result(out: Path, best: dict[str, Any] | None, last: dict[str, Any] | None,
               history: list[dict[str, Any]]) -> TrainResult:
    """:func:`stfn.engine.train.train`'s return value; the predictions of metrics restored from a
    checkpoint (a resumed run) are read back from their files."""
    for name, metrics in (("best", best), ("last", last)):
        path = out / f"predictions_{name}.json"
        if metrics is not None and "predictions" not in metrics and path.is_file():
            metrics["predictions"] = json.loads(path.read_text())
    return TrainResult(best, last, history, str(out / "best.pt"), str(out))
