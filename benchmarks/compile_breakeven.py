"""When ``torch.compile`` repays its compile time: the break-even behind ``train.compile: auto``.

For each backbone, in the engine's default precision here (channels_last, ``amp: auto``: bf16
autocast where the CPU or GPU runs it natively, fp32 elsewhere), two workloads:

- ``train``: a training step of the backbone + a linear classifier on ``--train-batch`` frames
  (forward, cross-entropy, backward, SGD), what ``stfn train`` runs per frame batch;
- ``infer``: inference on ``--infer-batch`` frames, what ``stfn extract-features`` and ``stfn eval``
  run per batch (compiled with inductor ``freezing``, as :func:`stfn.runtime.compile_backbones` does).

Each is timed eager and compiled, round-robin after the first call; the compiled first call includes
the compilation (a fresh inductor cache: ``TORCHINDUCTOR_CACHE_DIR`` is pointed at a new temporary
folder, so a warm cache from an earlier run does not hide the cost). The break-even is

    steps = (compiled first call - eager first call) / (eager step - compiled step)

(infinite where compiling saves nothing). ``stfn.runtime.resolve_compile`` compiles a run only when
it has more steps than the break-even recorded there for its device and workload.

Usage::

    python benchmarks/compile_breakeven.py                   # resnet18, 224 px
    python benchmarks/compile_breakeven.py --backbones resnet18 resnet50 --rounds 5
    python benchmarks/compile_breakeven.py --quick           # smoke test: cnn_small at 32 px, seconds
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import common
import torch
from torch import nn

from stfn.runtime import autocast_context, describe_dtype, resolve_amp, resolve_device


def workload(kind: str, backbone: str, batch: int, size: int, device: torch.device,
             amp: torch.dtype | None, compiled: bool) -> Callable[[], None]:
    """One step of ``kind`` (``train`` | ``infer``) on a fresh backbone; compiled lazily when asked."""
    from stfn.models import build_backbone

    torch.manual_seed(0)
    net = build_backbone(backbone)
    dim = net(torch.zeros(1, 3, size, size)).shape[1]
    model = nn.Sequential(net, nn.Linear(dim, 101)).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 101, (batch,), device=device)
    if kind == "infer":
        model.eval()
    # inference compiles with inductor freezing (weights folded as constants), as the engine does
    run = torch.compile(model, options={"freezing": kind == "infer"}) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step() -> None:
        with autocast_context(device, amp):
            loss = nn.functional.cross_entropy(run(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer_step() -> None:
        with torch.inference_mode(), autocast_context(device, amp):
            run(x)

    return train_step if kind == "train" else infer_step


def measure(kind: str, backbone: str, args: Any, device: torch.device, amp: torch.dtype | None) -> dict[str, Any]:
    """First-call and per-step seconds, eager and compiled, and the break-even step count."""
    batch = args.train_batch if kind == "train" else args.infer_batch
    fns, first = {}, {}
    for variant in ("eager", "compile"):
        fn = workload(kind, backbone, batch, args.size, device, amp, variant == "compile")
        with common.section(f"{backbone} {kind} {variant}: first call"):
            first[variant] = common.timed(fn, device)
        fns[variant] = fn
    with common.section(f"{backbone} {kind}: {args.rounds} rounds"):
        times = common.interleaved(fns, rounds=args.rounds, device=device, warmup=1)
    step = {v: common.stats(t)["median"] for v, t in times.items()}
    saving = step["eager"] - step["compile"]
    extra = first["compile"] - first["eager"]
    return {"backbone": backbone, "kind": kind, "batch": batch, "first_call_s": first, "step_s": step,
            "speedup": step["eager"] / step["compile"], "compile_s": extra,
            "break_even_steps": extra / saving if saving > 0 else math.inf}


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet18"])
    p.add_argument("--kinds", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--train-batch", type=int, default=8, help="frames per training step (batch 1 x 8 frames)")
    p.add_argument("--infer-batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    if args.quick:
        args.backbones, args.size, args.train_batch, args.infer_batch, args.rounds = ["cnn_small"], 32, 2, 2, 2
    common.setup_torch(args.threads)
    device = resolve_device(args.device)
    amp, _ = resolve_amp("auto", device, channels_last=True)
    load_before = common.loadavg()
    with tempfile.TemporaryDirectory(prefix="stfn-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # compile from scratch, as a first run would
        start = time.perf_counter()
        rows = [measure(k, b, args, device, amp) for b in args.backbones for k in args.kinds]
        total = time.perf_counter() - start
    info = common.machine_info()
    print(f"\ntorch.compile break-even at {args.size} px, channels_last, amp auto ({describe_dtype(amp)}); "
          f"{common.machine_line(info)}\n")
    print(common.md_table(
        ["backbone", "workload", "frames/step", "eager step s", "compiled step s", "speed-up",
         "compile time s", "break-even steps"],
        [[r["backbone"], r["kind"], r["batch"], f"{r['step_s']['eager']:.3f}", f"{r['step_s']['compile']:.3f}",
          f"{r['speedup']:.2f}x", f"{r['compile_s']:.1f}",
          "never" if math.isinf(r["break_even_steps"]) else f"{r['break_even_steps']:.0f}"] for r in rows]))
    path = common.write_results("compile_breakeven", {
        "settings": {k: (str(v) if k == "out" else v) for k, v in vars(args).items()},
        "amp": describe_dtype(amp), "seconds": total,
        "results": [{**r, "break_even_steps": None if math.isinf(r["break_even_steps"]) else r["break_even_steps"]}
                    for r in rows],
    }, args.out, load_before)
    print(f"\nwritten {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
