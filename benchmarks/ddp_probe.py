"""DistributedDataParallel probe of ``gpu_check.py``: an all-reduce and a DDP step whose gradients must
agree across ranks, in this process (world size 1) or in spawned processes (one GPU each)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["run_ddp"]


def _ddp_worker(rank: int, world: int, store: str, backend: str, result: Any) -> None:
    """One DDP rank: an all-reduce and a training step of a small net; rank 0 reports. The ranks meet
    through a file store (``store``), not a TCP port another job could take between choice and use."""
    import torch.distributed as dist

    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
        if backend == "nccl":
            torch.cuda.set_device(device)
        t = torch.full((4,), float(rank + 1), device=device)
        dist.all_reduce(t)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(device)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[rank] if backend == "nccl" else None)
        x = torch.randn(8, 16, device=device) + rank  # different data per rank: gradients are averaged
        ddp(x).sum().backward()
        g = model[0].weight.grad.detach().clone()
        gathered = [torch.zeros_like(g) for _ in range(world)]
        dist.all_gather(gathered, g)
        if rank == 0:
            result.put({"all_reduce": t.tolist(), "grads_equal_across_ranks": all(torch.equal(gathered[0], o)
                                                                                for o in gathered)})
        dist.barrier()  # no rank tears the group down while another still talks to it
    finally:
        dist.destroy_process_group()


def run_ddp(world: int, backend: str) -> dict[str, Any]:
    """DDP over ``world`` processes with ``backend`` (``nccl``: one GPU each; ``gloo``: CPU); world 1
    runs in this process. Raises ``AssertionError`` when the ranks disagree; returns rank 0's report."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="stfn-ddp-") as tmp:
        store = str(Path(tmp) / "store")
        if world == 1:
            _ddp_worker(0, 1, store, backend, queue)
        else:
            mp.start_processes(_ddp_worker, args=(world, store, backend, queue), nprocs=world, start_method="spawn")
        out = queue.get()
    expected = float(sum(range(1, world + 1)))
    if out["all_reduce"] != [expected] * 4 or not out["grads_equal_across_ranks"]:
        raise AssertionError(f"DDP with {backend} x {world} disagrees: {out}")
    return out
