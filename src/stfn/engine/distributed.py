"""Distributed data parallel helpers for runs started by ``torchrun``.

``torchrun --nproc_per_node N -m stfn train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``MASTER_ADDR``/``MASTER_PORT`` (also across nodes, with ``--nnodes`` and a rendezvous endpoint);
:func:`init_distributed` reads them and starts the process group (NCCL on GPUs, gloo on CPU). Without
them everything here degrades to a single process, so the same code path serves both cases.

Evaluation shards the test set without padding (``stfn.data.datasets.build_loader(train=False)``
gives rank ``r`` the indices ``r, r + W, r + 2W, ...``) and :func:`gather_objects` brings every
rank's predictions back, so each video is scored exactly once.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from stfn.runtime import resolve_device

__all__ = [
    "DistInfo",
    "all_true",
    "barrier",
    "cleanup",
    "gather_objects",
    "get_info",
    "init_distributed",
    "seed_everything",
    "sum_across",
    "sync_buffers",
]


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
            dist.init_process_group(backend=backend)
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank), torch_device
    if chosen.type == "cuda" and chosen.index is not None:
        torch.cuda.set_device(chosen)
    return DistInfo(), chosen


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
