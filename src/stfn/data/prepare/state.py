"""The state of ``stfn prepare`` in ``out_dir/.stfn-prepare``: what makes a run resumable.

``lock{suffix}`` (one run per shard), ``workers{suffix}.lock`` (held, shared, by the worker processes
of a run: a new run waits for the workers of a killed one), ``settings.json`` (an output folder holds
one set of settings), ``journal{suffix}.jsonl`` (one record per finished video, ``{"key", ...manifest
fields, "stamp": [size, mtime_ns] of the source}``) and ``tmp{suffix}/`` (videos being written).
:func:`plan` reads the journals of all shards and says which videos are left to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stfn.data.prepare.packed import FrameStore
from stfn.errors import StfnError
from stfn.fileio import atomic_write_json

__all__ = ["STATE_DIR", "parse_shard", "plan", "save_settings", "shard_lock", "shard_suffix"]

STATE_DIR = ".stfn-prepare"


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N), a tuple, ``None`` (0/1) or ``"auto"`` (Slurm array or torchrun env)."""
    if text is None:
        return 0, 1
    if isinstance(text, tuple):
        i, n = text
    elif text == "auto":
        env = os.environ
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            i = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            n = int(env["SLURM_ARRAY_TASK_COUNT"])
        else:
            i, n = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
    else:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise StfnError(f"shard '{text}' must look like I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise StfnError(f"shard {i}/{n} is out of range: need 0 <= I < N")
    return i, n


def shard_suffix(shard: tuple[int, int]) -> str:
    """The suffix of a shard's files: ``""`` for 0/1, else ``-shard{I}of{N}``."""
    return "" if shard == (0, 1) else f"-shard{shard[0]}of{shard[1]}"


@contextlib.contextmanager
def shard_lock(state: Path, suffix: str) -> Iterator[None]:
    """Exclusive lock for one shard; waits (up to 30 s) for worker processes of a killed run to exit."""
    try:
        import fcntl  # POSIX only
    except ImportError:  # Windows: no locking
        yield
        return
    lock = open(state / f"lock{suffix}", "a")  # noqa: SIM115
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StfnError(f"another stfn prepare is writing shard '{suffix or '0/1'}' of '{state.parent}'") from None
        with open(state / f"workers{suffix}.lock", "a") as wl:
            deadline = time.monotonic() + 30
            while True:  # orphaned workers hold a shared lock until their watchdog ends them
                try:
                    fcntl.flock(wl, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(wl, fcntl.LOCK_UN)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise StfnError(f"worker processes of an earlier run still write into '{state.parent}'") from None
                    time.sleep(0.1)
        yield
    finally:
        lock.close()


def save_settings(saved: Path, settings: dict[str, Any], out: Path) -> None:
    """Record ``settings`` in the state folder; refuse a folder prepared with other settings."""
    if saved.is_file() and json.loads(saved.read_text()) != settings:
        raise StfnError(
            f"'{out}' was prepared with other settings ({json.dumps(json.loads(saved.read_text()))}) than "
            f"this call's ({json.dumps(settings)}); use a new output folder or the same options"
        )
    atomic_write_json(saved, settings)


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                records[rec.pop("key")] = rec
            except (ValueError, KeyError, AttributeError):
                continue  # a line cut short by a kill
    return records


def _stamp(path: Path) -> list[int] | None:
    """``[size, mtime_ns]`` of a source video; None when it cannot be read (a dangling symlink, a symlink
    loop): that entry is then prepared, fails alone and is recorded, and the run goes on."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _write_failure(rec: dict[str, Any]) -> bool:
    """A failure journalled by an older version for a write error (disk full, not writable), which is
    not the video's fault: redone without ``retry_failed`` (this version does not journal them)."""
    return str(rec.get("error") or "").startswith("cannot write '")


def plan(
    mine: list[tuple[str, str]], root: Path, store: FrameStore, state: Path, journal_path: Path, tmp_root: Path,
    retry_failed: bool,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """``(records, tasks)`` of this shard's videos ``mine`` (``(key, source relative to root)``): the
    journalled records to keep (complete videos, failed ones not to retry, and this shard's records of
    videos an earlier list assigned) and the videos to prepare now (a temporary folder each)."""
    known: dict[str, dict[str, Any]] = {}
    for jp in sorted(state.glob("journal*.jsonl")):
        known.update({k: r for k, r in _read_journal(jp).items() if k not in known or r["status"] == "ok"})
    assigned = {k for k, _ in mine}
    records = {k: r for k, r in _read_journal(journal_path).items() if k not in assigned}  # earlier lists
    tasks = []
    for key, rel in mine:
        rec, src = known.get(key), root / rel
        if rec is not None and rec.get("stamp") == _stamp(src):
            if rec["status"] == "ok" and store.complete(key, rec.get("frames", 0), rec.get("flows", 0)):
                records[key] = rec
                continue
            if rec["status"] == "failed" and not retry_failed and not _write_failure(rec):
                records[key] = rec
                continue
        tasks.append({"key": key, "rel": rel, "source": str(src), "final": str(store.location(key)),
                      "tmp": str(tmp_root / f"{len(tasks):07d}"), "stamp": _stamp(src)})
    return records, tasks
