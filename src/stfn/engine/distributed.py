"""Distributed data parallel helpers for runs started by ``torchrun``.

``torchrun --nproc_per_node N -m stfn train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``MASTER_ADDR``/``MASTER_PORT`` (also across nodes, with ``--nnodes`` and a rendezvous endpoint);
:func:`init_distributed` reads them and starts the process group (NCCL on GPUs, gloo on CPU). Without
them everything here degrades to a single process, so the same code path serves both cases.

Evaluation shards the test set without padding (``stfn.data.datasets.build_loader(train=False)``
gives rank ``r`` the indices ``r, r + W, r + 2W, ...``) and :func:`gather_objects` brings every
rank's predictions back, so each video is scored exactly once.

A process that dies or stops answering does not leave the others waiting for ever: every collective
waits at most ``STFN_DIST_TIMEOUT`` seconds (default 1800, PyTorch's own default; the process group's
``timeout``), and a training whose peer is lost stops with one sentence (:func:`lost_peer_message`)
instead of a library traceback. ``torchrun`` itself also stops the other workers of a node when one
exits; the timeout is what ends a rank whose peer hangs or whose node is gone.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from stfn.errors import StfnError
from stfn.runtime import resolve_device

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "DistInfo",
    "all_true",
    "barrier",
    "cleanup",
    "gather_objects",
    "get_info",
    "init_distributed",
    "is_collective_failure",
    "lost_peer_message",
    "seed_everything",
    "sum_across",
    "sync_buffers",
    "timeout_seconds",
]

TIMEOUT_ENV = "STFN_DIST_TIMEOUT"  # seconds a collective waits for the other processes
DEFAULT_TIMEOUT_S = 1800.0  # PyTorch's default process-group timeout (30 min)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, GPU ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def get_info() -> DistInfo:
    """The current process group's view, or a single process when none is running."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Start the process group when launched by ``torchrun`` and pick this process's device.

    ``device`` is ``auto | cpu | cuda | cuda:N``. Under ``torchrun`` with CUDA, each process takes GPU
    ``LOCAL_RANK`` and the NCCL backend; on CPU the gloo backend. Returns ``(info, device)``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device, what="config key 'train.device'")
    if world_size > 1:
        if chosen.type == "cuda":
            torch_device = torch.device("cuda", local_rank)
            torch.cuda.set_device(torch_device)
            backend = "nccl"
        else:
            torch_device = torch.device("cpu")
            backend = "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_seconds()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank), torch_device
    if chosen.type == "cuda" and chosen.index is not None:
        torch.cuda.set_device(chosen)
    return DistInfo(), chosen


def timeout_seconds() -> float:
    """``STFN_DIST_TIMEOUT`` (seconds, > 0), else :data:`DEFAULT_TIMEOUT_S`; a bad value is one sentence."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 10**7:
        raise StfnError(f"environment variable {TIMEOUT_ENV} must be a number of seconds above 0 (default "
                        f"{DEFAULT_TIMEOUT_S:g}), got '{text}'")
    return value


_FAILURE_WORDS = ("gloo", "nccl", "connection closed", "connection reset", "broken pipe", "timed out", "timeout")


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process died or stopped answering."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and any(w in str(error).lower() for w in _FAILURE_WORDS)


def lost_peer_message(error: BaseException, info: DistInfo, epoch: int, last_path: Path) -> str:
    """One sentence for a training whose peer was lost in epoch ``epoch`` (1-based): what happened, the
    library's own words (first line, its source location left out), what ``last_path`` keeps, the resume."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    cause = re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0].rstrip(".")  # gloo: "[pair.cc:534] ..."
    cause = cause if len(cause) <= 160 else cause[:157] + "..."
    waited = "time" in cause.lower()
    how = (f"did not answer within {timeout_seconds():g} s ({TIMEOUT_ENV}, default {DEFAULT_TIMEOUT_S:g})" if waited
           else "was lost (it exited or was killed)")
    kept = f"'{last_path}' keeps the last finished epoch" if last_path.is_file() else "no epoch was saved"
    return (f"rank {info.rank} of {info.world_size}: another process of this training {how} during epoch {epoch} "
            f"({cause}); {kept}: start the run again with --resume when every process can run")


def cleanup() -> None:
    """Tear the process group down (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` for one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank (so all ranks stop together, without a hang)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    backend_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=backend_device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def sum_across(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (``values`` itself for one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    backend_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank, so all ranks evaluate the very
    model that rank 0 saves (DDP broadcasts them only at the start of each forward)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for b in model.buffers():
        dist.broadcast(b.data, src=0)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
