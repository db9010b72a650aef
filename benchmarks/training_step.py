"""CPU training steps against the machine's matmul peak: TSN backbones and the temporal heads, fp32 and bf16.

One training step as ``stfn train`` runs it (forward under the autocast of ``train.amp``, cross-entropy,
backward, the fused AdamW update) is timed round-robin for every workload and precision, next to the
best ``n x n`` matrix product of the same dtype measured in the same run before and after. FLOPs of a
step come from ``torch.utils.flop_counter`` (forward and backward, 2 per multiply-add), so "% of peak"
is the share of the dtype's matmul rate the step reaches.

Workloads:

- TSN single-stream backbones, channels_last: the demo's ``cnn_small`` (RGB and 10-channel flow at
  64 px, 16 videos x 8 frames), ``resnet18`` at 112 px (4 x 8) and ``resnet50`` at 224 px (2 x 8);
- heads on cached features: the demo's size (16 videos, T = 8, 2 x 256-d) for every head, and UCF101's
  (16 videos, T = 25, 2 x 2048-d) for STFN, Temporal-Inception and TS-LSTM. ``temporal_inception
  (convolutions)`` is the same head with each module run as its ``nn.Conv2d`` layers (what it was
  before its matrix-product form);
- the AdamW update alone over the TS-LSTM head: fused against the multi-tensor (``foreach``) one.

``bf16`` is CPU bfloat16 autocast (``train.amp: bf16``); a head runs under it where the CPU has bf16 in
hardware (``TwoStreamNet.forward_head``). Without bf16 hardware the bf16 rows are skipped (emulated:
several times slower) unless ``--force-bf16``.

Usage::

    python benchmarks/training_step.py --rounds 5
    python benchmarks/training_step.py --quick      # smoke test: tiny sizes, a few seconds
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import common
import torch
import torch.nn.functional as F
from torch import nn

from stfn.config import STREAMS, HeadConfig, ModelConfig
from stfn.models import build_model
from stfn.models.stfn import ARCHS, TwoStreamNet
from stfn.runtime import cpu_supports_bf16

Workload = tuple[str, Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]]


def backbone(name: str, stream: str, size: int, videos: int, frames: int = 8) -> Workload:
    """A single-stream TSN and a batch of ``videos x frames`` frames (RGB: 3 channels, flow: 2L = 10)."""
    def build() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        net = build_model(ModelConfig(arch="tsn", streams=[stream], backbone=name, pretrained=False,
                                      num_classes=101, flow_length=5)).train()
        net = net.to(memory_format=torch.channels_last)
        channels = 3 if stream == "rgb" else 10
        return net, {stream: torch.randn(videos, frames, channels, size, size)}
    return f"TSN {stream} {name} {size} px ({videos}x{frames})", build


def head(arch: str, videos: int, frames: int, dim: int, conv: bool = False) -> Workload:
    """A head-only two-stream network on cached features ``(videos, frames, dim)`` per stream."""
    def build() -> tuple[nn.Module, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        cfg = ModelConfig(arch=arch, num_classes=101, head=HeadConfig(hidden_dim=256 if dim <= 256 else 512))
        net = TwoStreamNet({}, ARCHS[arch][1](cfg, dim, list(STREAMS)), list(STREAMS), dim).train()
        if conv:
            for m in net.head.inception:
                m.forward = types.MethodType(conv_forward, m)
        g = torch.Generator().manual_seed(0)
        return net, {f"{s}_feat": torch.randn(videos, frames, dim, generator=g).relu() for s in STREAMS}
    label = f"{arch}{' (convolutions)' if conv else ''} T={frames} {dim}-d ({videos} videos)"
    return label, build


def conv_forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Temporal-Inception module run as its ``nn.Conv2d`` layers (+ BN + ReLU) and a max-pool."""
    y = torch.cat([branch(x) for branch in m.branches], dim=1)
    k = m.pool_size(x.shape[-1])
    return F.max_pool2d(y, (1, k), (1, k)) if k > 1 else y


def make_step(net: nn.Module, x: dict[str, torch.Tensor], dtype: torch.dtype | None) -> Callable[[], None]:
    """One training step of ``stfn train``: autocast forward, cross-entropy, backward, fused AdamW."""
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4, fused=True)
    y = torch.arange(next(iter(x.values())).shape[0]) % 101

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = net(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def step_gflop(net: nn.Module, x: dict[str, torch.Tensor]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(net(x), torch.zeros(next(iter(x.values())).shape[0], dtype=torch.long)).backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def optimizer_steps(quick: bool) -> dict[str, Callable[[], None]]:
    """The AdamW update alone over the TS-LSTM head's parameters (gradients set once): fused, foreach."""
    net = head("ts_lstm", 2, 4, 32 if quick else 256)[1]()[0]
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    fns = {}
    for kind in ("fused", "foreach"):
        opt = torch.optim.AdamW(params, lr=1e-6, **{kind: True})
        fns[f"AdamW {kind}, TS-LSTM head ({sum(p.numel() for p in params) / 1e6:.2f} M parameters)"] = opt.step
    return fns


def workloads(quick: bool) -> list[Workload]:
    if quick:
        return [backbone("cnn_small", "rgb", 32, 2, 4), head("stfn", 4, 4, 32), head("temporal_inception", 4, 4, 32),
                head("temporal_inception", 4, 4, 32, conv=True)]
    demo = [head(a, 16, 8, 256) for a in ("stfn", "temporal_inception", "ts_lstm", "tle", "tsn")]
    ucf = [head(a, 16, 25, 2048) for a in ("stfn", "temporal_inception", "ts_lstm")]
    return [backbone("cnn_small", "rgb", 64, 16), backbone("cnn_small", "flow", 64, 16),
            backbone("resnet18", "rgb", 112, 4), backbone("resnet50", "rgb", 224, 2),
            *demo[:2], head("temporal_inception", 16, 8, 256, conv=True), *demo[2:],
            ucf[0], ucf[1], head("temporal_inception", 16, 25, 2048, conv=True), ucf[2]]


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--force-bf16", action="store_true", help="time bf16 also where it is emulated")
    args = p.parse_args(argv)
    threads = common.setup_torch(args.threads)
    load_before = common.loadavg()
    rounds = 2 if args.quick else args.rounds
    precisions: dict[str, torch.dtype | None] = {"fp32": None}
    if cpu_supports_bf16() or args.force_bf16 or args.quick:
        precisions["bf16"] = torch.bfloat16
    max_n = 512 if args.quick else 4096
    peaks = {name: [common.matmul_peak(dt or torch.float32, "cpu", max_n=max_n)["gflops"]] for name, dt in precisions.items()}
    rows, results = [], []
    for label, build in workloads(args.quick):
        with common.section(label):
            net, x = build()
            gflop = step_gflop(net, x)
            fns = {name: make_step(net, x, dt) for name, dt in precisions.items()}
            times = common.interleaved(fns, rounds)
        for name, ts in times.items():
            s = common.stats(ts)["median"]
            results.append({"workload": label, "precision": name, "step_s": s, "gflop": gflop, "gflops": gflop / s})
    for name, dt in precisions.items():
        peaks[name].append(common.matmul_peak(dt or torch.float32, "cpu", max_n=max_n)["gflops"])
    peak = {name: max(v) for name, v in peaks.items()}
    for r in results:
        r["pct_peak"] = 100.0 * r["gflops"] / peak[r["precision"]]
        rows.append([r["workload"], r["precision"], f"{1e3 * r['step_s']:.1f}", f"{r['gflop']:.3g}",
                     f"{r['gflops']:.0f}", f"{r['pct_peak']:.0f}%"])
    opt_times = common.interleaved(optimizer_steps(args.quick), rounds * 4, calls=5)
    opt_rows = [[k, f"{1e3 * common.stats(v)['median']:.2f}"] for k, v in opt_times.items()]
    heads = ["workload", "precision", "ms / step", "GFLOP / step", "GFLOP/s", "% of the dtype's matmul peak"]
    print(f"Training steps (forward, loss, backward, fused AdamW) on {common.machine_line(common.machine_info())}, {threads} threads; "
          f"matmul peak fp32 {peak['fp32']:.0f} GFLOP/s"
          + (f", bf16 {peak['bf16']:.0f} GFLOP/s" if "bf16" in peak else ", bf16 not timed (emulated)") + "\n")
    print(common.md_table(heads, rows) + "\n")
    print(common.md_table(["optimizer update", "ms / step"], opt_rows))
    path = common.write_results("training_step", {"threads": threads, "peak_gflops": peak, "steps": results,
                                                  "optimizer": {k: common.stats(v) for k, v in opt_times.items()}},
                                args.out, load_before)
    print(f"\nresults: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

