"""What STFN's temporal head costs over TSN two-stream: training step time and peak memory.

Both networks come from ``stfn.models.build_model`` with the same backbone (one per stream), the
same frames, batch and input size; they differ only in the head (STFN: Residual Inception stacks +
fusion + pooling; TSN: per-frame linear classifiers + average consensus). A training step is what
the engine does: forward (``train.amp`` autocast), cross-entropy, backward, gradient clipping at 40,
SGD step (``stfn.engine.optim.build_optimizer``).

Measured for every backbone x input size:

- step time: STFN and TSN steps timed round-robin in one process (medians of ``--rounds``);
- head time: forward + backward of the head alone on ``(B, T, C)`` features, both heads
  round-robin; ``(STFN head - TSN head) / TSN step`` is the overhead with the backbone noise removed;
- peak memory: each network in a fresh subprocess (2 steps): peak RSS, and the rise during the steps
  over the RSS after building the model and optimiser (CUDA: ``max_memory_allocated``).

Target: STFN adds under 5% to the step time.

Usage::

    python benchmarks/model_overhead.py                         # resnet18, resnet50 x 112, 224 px
    python benchmarks/model_overhead.py --backbones resnet18 --sizes 112 --rounds 5
    python benchmarks/model_overhead.py --quick                 # smoke test
"""

from __future__ import annotations

import json
import sys
from typing import Any

import common
import torch
from torch import nn

from stfn.runtime import resolve_device, sync

ARCHS = ("stfn", "tsn")


def build(arch: str, backbone: str, args: Any, device: torch.device) -> nn.Module:
    from stfn.config import ModelConfig
    from stfn.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, backbone=backbone, num_classes=101, flow_length=args.flow_length)
    model = build_model(cfg).to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_batch(args: Any, size: int, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b, t = args.batch, args.frames
    batch = {"rgb": torch.randn(b, t, 3, size, size, generator=g),
             "flow": torch.randn(b, t, 2 * args.flow_length, size, size, generator=g)}
    labels = torch.randint(0, 101, (b,), generator=g)
    return {k: v.to(device) for k, v in batch.items()}, labels.to(device)


def amp_dtype(args: Any, device: torch.device) -> torch.dtype | None:
    from stfn.runtime import resolve_amp

    return resolve_amp(args.amp, device, args.channels_last)[0]


def make_step(model: nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor, dtype: torch.dtype | None,
              device: torch.device) -> Any:
    """One engine-like training step on a fixed batch, as a closure."""
    from stfn.config import TrainConfig
    from stfn.engine.optim import build_optimizer
    from stfn.runtime import autocast_context

    optimizer = build_optimizer(model, TrainConfig())
    params = [p for p in model.parameters() if p.requires_grad]
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast_context(device, dtype):
            logits = model(batch)
        loss = criterion(logits.float(), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 40.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def make_head_step(model: nn.Module, args: Any, labels: torch.Tensor, dtype: torch.dtype | None,
                   device: torch.device) -> Any:
    """Forward + backward of the head alone on random per-frame features ``(B, T, C)``."""
    from stfn.runtime import autocast_context

    g = torch.Generator().manual_seed(1)
    feats = {f"{s}_feat": torch.randn(args.batch, args.frames, model.feature_dim, generator=g).to(device)
             for s in model.streams}
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast_context(device, dtype):
            logits = model.forward_head(feats)
        criterion(logits.float(), labels).backward()
        model.head.zero_grad(set_to_none=True)

    return step


def child(args: Any) -> int:
    """Subprocess: build one network, run 2 steps, print its memory as one JSON line."""
    device = resolve_device(args.device)
    model = build(args.child_arch, args.child_backbone, args, device)
    batch, labels = make_batch(args, args.child_size, device)
    step = make_step(model, batch, labels, amp_dtype(args, device), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = common.current_rss_mb()
    for _ in range(2):
        step()
    sync(device)
    out = {"rss_before_steps_mb": before, "peak_rss_mb": common.peak_rss_mb()}
    out["step_rise_mb"] = out["peak_rss_mb"] - before
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))
    return 0


def measure_memory(arch: str, backbone: str, size: int, args: Any) -> dict[str, Any]:
    argv = [__file__, "--child-arch", arch, "--child-backbone", backbone, "--child-size", str(size),
            "--batch", str(args.batch), "--frames", str(args.frames), "--flow-length", str(args.flow_length),
            "--amp", args.amp, "--threads", str(args.threads), "--device", args.device]
    if not args.channels_last:
        argv.append("--no-channels-last")
    return common.run_child(argv)


def run_config(backbone: str, size: int, args: Any, device: torch.device) -> dict[str, Any]:
    dtype = amp_dtype(args, device)
    batch, labels = make_batch(args, size, device)
    models = {a: build(a, backbone, args, device) for a in ARCHS}
    steps = {a: make_step(m, batch, labels, dtype, device) for a, m in models.items()}
    heads = {a: make_head_step(m, args, labels, dtype, device) for a, m in models.items()}
    with common.section(f"{backbone} {size}px: steps"):
        step_t = common.interleaved(steps, rounds=args.rounds, device=device, warmup=1)
    with common.section(f"{backbone} {size}px: heads"):
        head_t = common.interleaved(heads, rounds=args.rounds, device=device, warmup=2, calls=args.head_calls)
    row: dict[str, Any] = {"backbone": backbone, "size": size,
                           "params": {a: sum(p.numel() for p in m.parameters()) for a, m in models.items()},
                           "head_params": {a: sum(p.numel() for p in m.head.parameters()) for a, m in models.items()},
                           "step_s": {a: common.stats(t) for a, t in step_t.items()},
                           "head_s": {a: common.stats(t) for a, t in head_t.items()}}
    del models, steps, heads
    stfn_s, tsn_s = row["step_s"]["stfn"]["median"], row["step_s"]["tsn"]["median"]
    row["step_overhead"] = stfn_s / tsn_s - 1
    row["head_overhead"] = (row["head_s"]["stfn"]["median"] - row["head_s"]["tsn"]["median"]) / tsn_s
    # Per-round paired ratios: robust to load that changes between rounds.
    ratios = [a / b for a, b in zip(step_t["stfn"], step_t["tsn"], strict=True)]
    row["step_ratio_rounds"] = ratios
    if args.memory:
        with common.section(f"{backbone} {size}px: memory"):
            row["memory"] = {a: measure_memory(a, backbone, size, args) for a in ARCHS}
    return row


def print_table(rows: list[dict[str, Any]], args: Any, info: dict[str, Any], dtype: Any) -> None:
    print(f"\nTraining step, batch {args.batch} x {args.frames} frames, RGB + flow (L={args.flow_length}), "
          f"amp {dtype or 'off'}, channels_last {args.channels_last}; {common.machine_line(info)}\n")
    table = []
    for r in rows:
        mem = r.get("memory", {})
        m = [f"{mem[a]['peak_rss_mb']:.0f} ({mem[a]['step_rise_mb']:+.0f})" if a in mem else "-" for a in ARCHS]
        table.append([r["backbone"], r["size"], f"{r['step_s']['tsn']['median']:.3f}",
                      f"{r['step_s']['stfn']['median']:.3f}", f"{100 * r['step_overhead']:+.1f}%",
                      f"{1e3 * r['head_s']['tsn']['median']:.2f}", f"{1e3 * r['head_s']['stfn']['median']:.2f}",
                      f"{100 * r['head_overhead']:+.2f}%", m[1], m[0],
                      "yes" if r["head_overhead"] < 0.05 else "NO"])
    print(common.md_table(["backbone", "px", "TSN step s", "STFN step s", "step overhead", "TSN head ms",
                           "STFN head ms", "head overhead / step", "TSN peak MiB (rise)",
                           "STFN peak MiB (rise)", "< 5%"], table))


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--sizes", nargs="+", type=int, default=[112, 224])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=8, help="T frames (and flow stacks) per video")
    p.add_argument("--flow-length", type=int, default=5)
    p.add_argument("--amp", default="none", help="train.amp: none | bf16 | auto (auto = bf16 on CPU)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--head-calls", type=int, default=10, help="head steps per timed head round")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory subprocesses")
    p.add_argument("--child-arch", help=argparse_hidden())
    p.add_argument("--child-backbone", help=argparse_hidden())
    p.add_argument("--child-size", type=int, help=argparse_hidden())
    args = p.parse_args(argv)
    if args.quick:
        args.backbones, args.sizes, args.batch, args.frames, args.rounds, args.head_calls = ["resnet18"], [32], 2, 2, 1, 2
        args.threads = args.threads or 1
    common.setup_torch(args.threads)
    if args.child_arch:
        return child(args)
    device = resolve_device(args.device)
    load_before = common.loadavg()
    rows = [run_config(b, s, args, device) for b in args.backbones for s in args.sizes]
    info = common.machine_info()
    print_table(rows, args, info, amp_dtype(args, device))
    path = common.write_results("model_overhead", {
        "settings": {k: (str(v) if k == "out" else v) for k, v in vars(args).items() if not k.startswith("child")},
        "amp_dtype": str(amp_dtype(args, device)), "results": rows,
    }, args.out, load_before)
    print(f"\nwritten {path}", file=sys.stderr)
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
