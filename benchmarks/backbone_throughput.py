"""Frame-backbone inference throughput against the machine's own matrix-multiply peak.

For each backbone (torchvision, classifier removed, as ``stfn.models.build_backbone`` builds it) and
each variant, images per second at ``--batch`` x 3 x ``--size`` x ``--size``, in inference mode:

=================  ==========================================================================
fp32               eager, NCHW (the PyTorch default)
channels_last      eager, NHWC memory format (oneDNN convolutions without layout reorders)
bf16               channels_last + ``torch.autocast("cpu", bfloat16)`` (the engine's ``amp: auto``)
compile            channels_last + ``torch.compile`` (inductor)
compile_freeze     the same with inductor ``freezing`` (weights folded as constants; inference only)
compile_bf16       compile_freeze under bf16 autocast
=================  ==========================================================================

The FLOP rate is ``FLOPs per image x images/s`` (FLOPs counted by ``torch.utils.flop_counter``, a
multiply-add = 2); its best round is shown as a fraction of the best square-matmul rate of the *same
dtype*, measured in the same run before and after the models (best against best, so that load from
other processes does not count against the model alone). Variants are timed round-robin; medians are reported.
On a CPU without native bf16 (no AVX512-BF16 / AMX) bf16 kernels are emulated and tens of times
slower: bf16 variants are then skipped unless ``--force-bf16`` (the matmul peaks still show why).

Usage::

    python benchmarks/backbone_throughput.py                       # resnet50 + resnet18, 224 px, batch 16
    python benchmarks/backbone_throughput.py --backbones resnet50 --variants fp32 channels_last compile_freeze
    python benchmarks/backbone_throughput.py --quick               # smoke test, seconds
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import common
import torch

from stfn.runtime import cpu_supports_bf16, resolve_device

VARIANTS = ("fp32", "channels_last", "bf16", "compile", "compile_freeze", "compile_bf16")
BF16_VARIANTS = ("bf16", "compile_bf16")


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    """FLOPs (multiply-add = 2) of one forward pass on one 3 x size x size image."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.randn(1, 3, size, size))
    return float(counter.get_total_flops())


def make_variant(name: str, backbone: str, device: torch.device) -> tuple[Any, bool, torch.dtype]:
    """``(callable model, channels_last input, dtype of the matmul peak to compare with)``; compiled
    variants compile lazily, on their first call."""
    from stfn.models import build_backbone

    model = build_backbone(backbone).eval().to(device)
    if name == "fp32":
        return model, False, torch.float32
    model = model.to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if name in BF16_VARIANTS else torch.float32
    if not name.startswith("compile"):
        return model, True, dtype
    return torch.compile(model, options={"freezing": name != "compile"}), True, dtype


def run_backbone(backbone: str, args: Any, device: torch.device, skip_bf16: bool) -> list[dict[str, Any]]:
    """Time every variant of one backbone, round-robin; one result row per variant."""
    from stfn.models import build_backbone

    flops = flops_per_image(build_backbone(backbone).eval(), args.size)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    x_cl = x.to(memory_format=torch.channels_last)
    fns, rows = {}, {}
    for name in args.variants:
        if name in BF16_VARIANTS and skip_bf16:
            rows[name] = {"backbone": backbone, "variant": name, "skipped": "bf16 is emulated on this CPU"}
            continue
        model, cl, dtype = make_variant(name, backbone, device)
        amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if dtype == torch.bfloat16 else (
            contextlib.nullcontext)
        inp = x_cl if cl else x

        def fn(model: Any = model, amp: Any = amp, inp: torch.Tensor = inp) -> None:
            with torch.inference_mode(), amp():
                model(inp)

        start = time.perf_counter()
        with common.section(f"{backbone} {name}: first call"):
            fn()  # compiles where needed
        rows[name] = {"backbone": backbone, "variant": name, "dtype": str(dtype).replace("torch.", ""),
                      "first_call_s": time.perf_counter() - start}
        fns[name] = fn
    with common.section(f"{backbone}: {len(fns)} variants x {args.rounds} rounds"):
        times = common.interleaved(fns, rounds=args.rounds, device=device, warmup=1)
    for name, ts in times.items():
        s = common.stats(ts)
        rows[name].update(seconds=s, images_per_s=args.batch / s["median"], flops_per_image=flops,
                          gflops=flops * args.batch / s["median"] / 1e9, best_gflops=flops * args.batch / s["min"] / 1e9)
    base = rows.get("fp32", {}).get("images_per_s")
    for r in rows.values():
        if base and "images_per_s" in r:
            r["speedup_vs_fp32"] = r["images_per_s"] / base
    return [rows[n] for n in args.variants]


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet50", "resnet18"])
    p.add_argument("--variants", nargs="+", choices=VARIANTS,
                   default=["fp32", "channels_last", "bf16", "compile", "compile_freeze", "compile_bf16"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (median reported)")
    p.add_argument("--force-bf16", action="store_true", help="run bf16 variants even where bf16 is emulated")
    args = p.parse_args(argv)
    if args.quick:  # smoke test: the whole path at toy sizes, no compilation
        args.backbones, args.size, args.batch, args.rounds = ["resnet18"], 32, 2, 1
        args.variants = [v for v in args.variants if not v.startswith("compile")]
        args.threads = args.threads or 1
    common.setup_torch(args.threads)
    device = resolve_device(args.device)
    load_before = common.loadavg()
    native = device.type == "cuda" or cpu_supports_bf16()
    skip_bf16 = not native and not args.force_bf16 and not args.quick
    peak_seconds = 0.2 if args.quick else 1.0
    max_n = 512 if args.quick else 4096
    peaks: dict[str, list[dict[str, Any]]] = {"float32": [], "bfloat16": []}
    with common.section("matmul peaks (before)"):
        for dt in (torch.float32, torch.bfloat16):
            peaks[str(dt).replace("torch.", "")].append(common.matmul_peak(dt, device, peak_seconds, max_n))
    rows: list[dict[str, Any]] = []
    for backbone in args.backbones:
        rows += run_backbone(backbone, args, device, skip_bf16)
    with common.section("matmul peaks (after)"):
        for dt in (torch.float32, torch.bfloat16):
            peaks[str(dt).replace("torch.", "")].append(common.matmul_peak(dt, device, peak_seconds, max_n))
    peak = {k: max(v, key=lambda d: d["gflops"]) for k, v in peaks.items()}
    for r in rows:
        if "gflops" in r:  # best round against the best matmul: capability against capability
            r["fraction_of_peak"] = r["best_gflops"] / peak[r["dtype"]]["gflops"]

    info = common.machine_info()
    print(f"\nBackbone inference, batch {args.batch} x 3 x {args.size} x {args.size}; {common.machine_line(info)}\n")
    print(common.md_table(
        ["dtype", "matmul peak GFLOP/s (before / after)", "best n"],
        [[k, f"{v[0]['gflops']:.1f} / {v[-1]['gflops']:.1f}", peak[k]["n"]] for k, v in peaks.items()]))
    print()
    table = []
    for r in rows:
        if "skipped" in r:
            table.append([r["backbone"], r["variant"], "-", "-", "-", "-", f"skipped: {r['skipped']}"])
            continue
        table.append([r["backbone"], r["variant"], f"{r['images_per_s']:.1f}", f"{r.get('speedup_vs_fp32', 1):.2f}x",
                      f"{r['gflops']:.1f} / {r['best_gflops']:.1f}", f"{100 * r['fraction_of_peak']:.0f}% of {r['dtype']}",
                      f"first call {r['first_call_s']:.1f} s"])
    print(common.md_table(["backbone", "variant", "img/s", "vs fp32", "GFLOP/s median / best",
                           "best vs matmul peak", "note"], table))
    path = common.write_results("backbone_throughput", {
        "settings": {k: (str(v) if k == "out" else v) for k, v in vars(args).items()},
        "matmul_peak": peaks, "matmul_peak_best": peak, "bf16_skipped": skip_bf16, "results": rows,
    }, args.out, load_before)
    print(f"\nwritten {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
