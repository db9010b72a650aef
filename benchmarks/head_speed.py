"""Temporal heads on CPU: the fast layers against PyTorch's own Conv1d / BatchNorm1d / MaxPool1d, side by side.

The STFN head computes their temporal layers as matrix products on the
``(B, T, C)`` layout (:mod:`stfn.models.temporal`). :func:`stfn.models.temporal.to_reference` gives a
copy with the same weights that runs PyTorch's own ``nn.Conv1d`` / ``BatchNorm1d`` / ``MaxPool1d``
kernels: the implementation before the fast paths. This script checks that both give the same logits
and gradients, then times a training step (forward, cross-entropy, backward) of each on one in-memory
batch of cached features, round-robin, for every (head, threads, precision):

- ``fp32``: no autocast;
- ``bf16``: under CPU bfloat16 autocast through ``TwoStreamNet.forward_head`` (what ``train.amp=bf16``
  does; the head then runs in float32 where the CPU has no bf16 hardware, in bf16 where it has, so
  there this row equals ``bf16-head``);
- ``bf16-head``: the head itself under bfloat16 autocast (``forward_head``'s float32 fallback bypassed).
  Without bf16 hardware this is emulated and very slow, so it is timed for one step only.

Times are medians over rounds. On a shared machine the wall clock (what users feel) swings with the
load of other processes; the CPU time of this process (``process_time``, all threads) swings less,
and ``videos per CPU-s`` is the rate a quiet machine would give per core. FLOPs of the step are
counted by ``torch.utils.flop_counter``; ``% peak`` compares the rate to the best of ten 1024^3 fp32
matmuls measured in the same run with the same threads. Target (issue 7): an epoch over a UCF101-sized cache
(9537 videos, T=25, 2048-d, two streams) in under 60 s on 2 cores, i.e. >= 159 videos/s.

CPU only: ``--thread-counts`` sets the threads (the common ``--threads`` and ``--device`` are ignored).

Usage::

    python benchmarks/head_speed.py                          # T=25, 2048-d, batch 32, 1 and 2 threads
    python benchmarks/head_speed.py --batch 8 --dim 512 --archs stfn
    python benchmarks/head_speed.py --quick                  # smoke test: tiny sizes, a few seconds
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from typing import Any

import common
import torch
from torch import nn

from stfn.config import STREAMS as _STREAMS
from stfn.runtime import cpu_supports_bf16

STREAMS = list(_STREAMS)
PRECISIONS = ("fp32", "bf16", "bf16-head")
UCF101_TRAIN = 9537


def build_pair(arch: str, dim: int, hidden: int, classes: int) -> tuple[nn.Module, nn.Module]:
    """(after, before): the head-only network and its reference copy (PyTorch's layers), same weights."""
    from stfn.config import HeadConfig, ModelConfig
    from stfn.models.stfn import ARCHS, TwoStreamNet
    from stfn.models.temporal import to_reference

    cfg = ModelConfig(arch=arch, num_classes=classes, head=HeadConfig(hidden_dim=hidden))
    torch.manual_seed(0)
    fast = TwoStreamNet({}, ARCHS[arch][1](cfg, dim, STREAMS), STREAMS, dim).train()
    return fast, to_reference(fast)


def make_batch(b: int, t: int, dim: int, classes: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = {f"{s}_feat": torch.randn(b, t, dim, generator=g).relu() for s in STREAMS}  # ReLU'd like CNN features
    return x, torch.randint(0, classes, (b,), generator=g)


def make_step(net: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor, precision: str) -> Callable[[], None]:
    """One training step (forward, loss, backward; gradients dropped) in ``precision``."""
    def step() -> None:
        if precision == "fp32":
            logits = net.forward_head(x)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = net.forward_head(x) if precision == "bf16" else net.head(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        net.zero_grad(set_to_none=True)

    return step


def check_same(fast: nn.Module, ref: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor,
               dtype: torch.dtype) -> dict[str, float]:
    """Largest differences between the implementations in ``dtype`` (on copies, dropout off): logits,
    gradients and BatchNorm running statistics, each relative to the largest value of its kind."""
    nets = [copy.deepcopy(n).to(dtype) for n in (fast, ref)]
    outs = []
    for net in nets:
        for m in net.modules():  # dropout masks would differ
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        z = net.forward_head({k: v.to(dtype) for k, v in x.items()})
        nn.functional.cross_entropy(z, y).backward()
        outs.append({"logits": [z.detach()], "grads": [p.grad for p in net.parameters()],
                     "buffers": [b for b in net.buffers() if b.is_floating_point()]})

    def rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        scale = max(t.abs().max().item() for t in b) or 1.0
        return max((u - v).abs().max().item() for u, v in zip(a, b, strict=True)) / scale

    return {kind: rel(outs[0][kind], outs[1][kind]) for kind in ("logits", "grads", "buffers")}


def step_flops(net: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        make_step(net, x, y, "fp32")()
    return counter.get_total_flops()


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_gflops(threads: int, n: int = 1024, reps: int = 10) -> dict[str, float]:
    """fp32 matmul rate (wall and per CPU-s) at ``threads``: the ceiling of the heads' matrix products.

    The best of ``reps`` products (a capability: a median taken while other jobs burst made the heads
    read above 100% of it)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    walls, cpus = zip(*(timed(lambda: a @ b) for _ in range(reps)), strict=True)
    flops = 2 * n**3
    return {"wall": flops / min(walls) / 1e9, "cpu": flops / max(min(cpus), 1e-9) / 1e9}


def measure(steps: dict[str, Callable[[], None]], once: set[str], rounds: int) -> dict[str, dict[str, Any]]:
    """Round-robin timing (order reversed every other round); keys in ``once`` get a single timed step
    and no warm-up (emulated bf16: too slow for more)."""
    for k, fn in steps.items():
        if k not in once:
            fn()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in steps}
    for r in range(rounds):
        for k in steps if r % 2 == 0 else list(steps)[::-1]:
            if k in once and r > 0:
                continue
            times[k].append(timed(steps[k]))
    return {k: {"wall_s": common.stats([w for w, _ in ts]), "cpu_s": common.stats([c for _, c in ts])}
            for k, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--archs", nargs="+", default=["stfn"],
                   help="model.arch of the heads built from the matrix-product temporal layers")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--frames", type=int, default=25, help="T: frames per video")
    p.add_argument("--dim", type=int, default=2048, help="feature size per stream (resnet50: 2048, resnet18: 512)")
    p.add_argument("--hidden", type=int, default=512, help="model.head.hidden_dim")
    p.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2], help="torch threads to compare")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.frames, args.dim, args.hidden, args.rounds = 4, 8, 64, 32, 2
        args.thread_counts = [1]
    classes = 101
    load_before = common.loadavg()
    x, y = make_batch(args.batch, args.frames, args.dim, classes)
    nets = {a: build_pair(a, args.dim, args.hidden, classes) for a in args.archs}
    torch.set_num_threads(1)
    with common.section("equivalence"):
        same = {a: {str(d).replace("torch.", ""): check_same(*nets[a], x, y, d) for d in (torch.float64, torch.float32)}
                for a in args.archs}
    flops = {a: step_flops(nets[a][0], x, y) for a in args.archs}
    native = cpu_supports_bf16()
    results = []
    for threads in args.thread_counts:
        peak = matmul_gflops(threads)
        torch.set_num_threads(threads)
        steps, once = {}, set()
        for a in args.archs:
            for prec in args.precisions:
                for impl, net in zip(("after", "before"), nets[a], strict=True):
                    key = f"{a}/{prec}/{impl}"
                    steps[key] = make_step(net, x, y, prec)
                    if prec == "bf16-head" and not native:
                        once.add(key)
        with common.section(f"{threads} thread(s): {len(steps)} variants x {args.rounds} rounds"):
            timing = measure(steps, once, args.rounds)
        for a in args.archs:
            for prec in args.precisions:
                row: dict[str, Any] = {"arch": a, "threads": threads, "precision": prec, "matmul_gflops": peak,
                                       "flops_per_video": flops[a] / args.batch}
                for impl in ("before", "after"):
                    t = timing[f"{a}/{prec}/{impl}"]
                    row[impl] = {**t, "videos_per_s": args.batch / t["wall_s"]["median"],
                                 "videos_per_cpu_s": args.batch / t["cpu_s"]["median"]}
                row["speedup_wall"] = row["before"]["wall_s"]["median"] / row["after"]["wall_s"]["median"]
                row["speedup_cpu"] = row["before"]["cpu_s"]["median"] / row["after"]["cpu_s"]["median"]
                row["epoch_s"] = UCF101_TRAIN / row["after"]["videos_per_s"]
                row["percent_of_peak"] = 100 * flops[a] / row["after"]["wall_s"]["median"] / 1e9 / peak["wall"]
                results.append(row)

    info = common.machine_info()
    print(f"\nTemporal heads, training step (forward + cross-entropy + backward) on cached features: batch "
          f"{args.batch} x T={args.frames} x {args.dim}-d x 2 streams, hidden {args.hidden}; before = PyTorch's "
          f"Conv1d/BatchNorm1d/MaxPool1d (to_reference), after = stfn.models.temporal; "
          f"{common.machine_line(info)}\n")
    headers = ["head", "threads", "precision", "before videos/s", "after videos/s", "speed-up",
               "before videos/CPU-s", "after videos/CPU-s", "speed-up (CPU)", "after % of matmul peak",
               "UCF101 epoch s (after)"]
    rows = [[r["arch"], r["threads"], r["precision"] + (" (1 step)" if r["precision"] == "bf16-head" and not native
                                                         else ""),
             f"{r['before']['videos_per_s']:.1f}", f"{r['after']['videos_per_s']:.1f}", f"{r['speedup_wall']:.2f}x",
             f"{r['before']['videos_per_cpu_s']:.1f}", f"{r['after']['videos_per_cpu_s']:.1f}",
             f"{r['speedup_cpu']:.2f}x", f"{r['percent_of_peak']:.0f}%", f"{r['epoch_s']:.0f}"] for r in results]
    print(common.md_table(headers, rows))
    print()
    print(common.md_table(
        ["head", "training GFLOP per video", "dtype", "max rel. difference: logits", "gradients", "BN running stats"],
        [[a, f"{flops[a] / args.batch / 1e9:.3f}", d, f"{v['logits']:.1e}", f"{v['grads']:.1e}", f"{v['buffers']:.1e}"]
         for a in args.archs for d, v in same[a].items()]))
    path = common.write_results("head_speed", {
        "settings": {k: str(v) if not isinstance(v, (int, float, list, str)) else v for k, v in vars(args).items()},
        "bf16_native": native, "equivalence": same, "results": results,
    }, args.out, load_before)
    print(f"\nwritten {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
