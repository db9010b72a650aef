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
openvino           the backbone on OpenVINO (``stfn.engine.openvino``: ``convert_model`` of the module,
                   batch axis dynamic), ``INFERENCE_PRECISION_HINT=f32``, torch's thread count
openvino_bf16      the same with ``INFERENCE_PRECISION_HINT=bf16`` (``--backend openvino`` under ``amp: auto``
                   on a CPU with native bf16)
extract_features   what ``stfn extract-features`` runs by default: a TwoStreamNet's
                   ``forward_features`` under ``torch.no_grad`` with the engine's own choices
                   (channels_last, ``amp: auto``, ``--backend auto`` for a UCF101-sized run) on
                   one clip of ``--batch`` frames: compiled on the CPU, the command sends one video
                   (T frames) per call; its ratio to the fastest variant is the "within 10%" target
=================  ==========================================================================

The FLOP rate is ``FLOPs per image x images/s`` (FLOPs counted by ``torch.utils.flop_counter``, a
multiply-add = 2), compared with the square-matmul rate of the *same dtype* measured in the same
loop: every round times each variant *and* ``n x n @ n x n`` products at several sizes (512, 1024,
2048), round-robin, so that load from other processes hits peak and models alike. A round's peak is
its best size; the table gives the median and the best round of both peak and variants, and the two
ratios: median / median (what to judge) and best / best (capability against capability). The
theoretical bound (``cpu_bound.py``: cores x FLOP/cycle from the vector width x clock) is printed
next to the peaks; a measured peak above it is flagged: that timing is wrong, not the CPU fast.
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
import cpu_bound
import torch

from stfn.runtime import cpu_supports_bf16, resolve_device

VARIANTS = ("fp32", "channels_last", "bf16", "compile", "compile_freeze", "compile_bf16", "openvino", "openvino_bf16",
            "extract_features")
UCF101_FRAMES = 13320 * 25  # what `stfn extract-features` sends through a backbone for UCF101 (train + test)
BF16_VARIANTS = ("bf16", "compile_bf16", "openvino_bf16")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PEAK_SIZES = (512, 1024, 2048)


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
    if name.startswith("openvino"):
        from stfn.engine.openvino import openvino_backbones

        holder = torch.nn.Module()
        holder.backbones = torch.nn.ModuleDict({"rgb": model})
        dtype = torch.bfloat16 if name in BF16_VARIANTS else torch.float32
        openvino_backbones(holder, dtype)  # converted at the first call; OpenVINO reads NCHW numpy
        return model, False, dtype
    model = model.to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if name in BF16_VARIANTS else torch.float32
    if not name.startswith("compile"):
        return model, True, dtype
    return torch.compile(model, options={"freezing": name != "compile"}), True, dtype


def extract_features_fn(backbone: str, x: torch.Tensor, device: torch.device) -> tuple[Any, torch.dtype, dict]:
    """``stfn extract-features``'s network path on ``x (N, 3, S, S)`` as one clip of N frames: the
    callable, the autocast dtype it resolved, and what it chose."""
    from stfn.config import ModelConfig
    from stfn.engine.backends import apply_backend, choose_backend
    from stfn.models import build_model
    from stfn.runtime import autocast_context, resolve_amp

    model = build_model(ModelConfig(arch="stfn", backbone=backbone, streams=["rgb"], num_classes=101,
                                    pretrained=False)).to(device).eval()
    model.to(memory_format=torch.channels_last)  # train.channels_last: true (the default)
    amp, _ = resolve_amp("auto", device, True)
    chosen = choose_backend("auto", model, device, UCF101_FRAMES, x.shape[-1])
    ran = apply_backend(model, chosen, amp)
    clip = {"rgb": x.unsqueeze(0)}

    def fn() -> None:
        with torch.no_grad(), autocast_context(device, amp):
            model.forward_features(clip)

    return fn, amp or torch.float32, {"amp": str(amp).replace("torch.", ""), "backend": ran}


def peak_fns(sizes: tuple[int, ...], device: torch.device, target_s: float) -> dict[str, Any]:
    """``{"peak <dtype> <n>": fn}``: each fn runs ``n x n @ n x n`` as often as fills about ``target_s``
    seconds (calibrated once here); its per-call time then gives the rate of one product."""
    fns: dict[str, Any] = {}
    for dname, dt in DTYPES.items():
        for n in sizes:
            a, b = (torch.randn(n, n, dtype=dt, device=device) for _ in range(2))
            c = torch.empty(n, n, dtype=dt, device=device)
            for _ in range(2):  # warm up oneDNN and the threads before calibrating
                once = common.timed(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), device)
            reps = max(1, min(50, round(target_s / max(once, 1e-6))))

            def fn(a: torch.Tensor = a, b: torch.Tensor = b, c: torch.Tensor = c, reps: int = reps) -> int:
                for _ in range(reps):
                    torch.mm(a, b, out=c)
                return reps
            fn.reps, fn.flops = reps, 2 * n**3  # type: ignore[attr-defined]
            fns[f"peak {dname} {n}"] = fn
    return fns


def peak_rounds(times: dict[str, list[float]], fns: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per dtype, per round: the best size's GFLOP/s and that size."""
    out: dict[str, list[dict[str, Any]]] = {}
    for dname in DTYPES:
        names = [k for k in times if k.startswith(f"peak {dname} ")]
        rounds = len(times[names[0]]) if names else 0
        for r in range(rounds):
            rates = {int(k.split()[-1]): fns[k].flops * fns[k].reps / times[k][r] / 1e9 for k in names}
            n = max(rates, key=rates.__getitem__)
            out.setdefault(dname, []).append({"gflops": rates[n], "n": n})
    return out


def run_backbone(backbone: str, args: Any, device: torch.device, skip_bf16: bool,
                 peaks: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Time every variant of one backbone and the matmul peaks, round-robin in one loop; one result
    row per variant and the peak rounds of this loop."""
    from stfn.models import build_backbone

    flops = flops_per_image(build_backbone(backbone).eval(), args.size)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    x_cl = x.to(memory_format=torch.channels_last)
    fns, rows = {}, {}
    for name in args.variants:
        if name in BF16_VARIANTS and skip_bf16:
            rows[name] = {"backbone": backbone, "variant": name, "skipped": "bf16 is emulated on this CPU"}
            continue
        chose: dict[str, Any] = {}
        if name == "extract_features":
            fn, dtype, chose = extract_features_fn(backbone, x, device)
        else:
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
                      "first_call_s": time.perf_counter() - start, **chose}
        fns[name] = fn
    with common.section(f"{backbone}: {len(fns)} variants + {len(peaks)} matmuls x {args.rounds} rounds"):
        times = common.interleaved({**fns, **peaks}, rounds=args.rounds, device=device, warmup=1)
    for name in fns:
        s = common.stats(times[name])
        rows[name].update(seconds=s, images_per_s=args.batch / s["median"], flops_per_image=flops,
                          gflops=flops * args.batch / s["median"] / 1e9, best_gflops=flops * args.batch / s["min"] / 1e9)
    base = rows.get("fp32", {}).get("images_per_s")
    fastest = max((r["images_per_s"] for n, r in rows.items() if "images_per_s" in r and n != "extract_features"),
                  default=None)
    for r in rows.values():
        if base and "images_per_s" in r:
            r["speedup_vs_fp32"] = r["images_per_s"] / base
        if fastest and "images_per_s" in r:
            r["vs_fastest_variant"] = r["images_per_s"] / fastest
    return [rows[n] for n in args.variants], peak_rounds(times, peaks)


def summarise_peaks(rounds: dict[str, list[dict[str, Any]]], bounds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Median and best round per dtype, with the bound and whether any round exceeded it."""
    out = {}
    for dname, rs in rounds.items():
        rates = sorted(r["gflops"] for r in rs)
        best = max(rs, key=lambda r: r["gflops"])
        bound = bounds[dname]["gflops"]
        out[dname] = {"median": common.stats(rates)["median"], "best": best["gflops"], "best_n": best["n"],
                      "rounds": len(rs), "bound": bound, "formula": bounds[dname]["formula"],
                      "above_bound": bool(bound and best["gflops"] > bound)}
    return out


def tables(rows: list[dict[str, Any]], peak: dict[str, Any], clock: tuple[float | None, str]) -> str:
    """The two markdown tables of the run (peaks, then variants), ready to paste."""
    ghz = f"{clock[0]:.2f} GHz ({clock[1]})" if clock[0] else f"unknown ({clock[1]})"
    first = common.md_table(
        ["dtype", "matmul peak GFLOP/s median / best", "rounds", "best n", "theoretical bound GFLOP/s", "bound formula"],
        [[k, f"{v['median']:.1f} / {v['best']:.1f}" + (" **ABOVE BOUND: timing wrong**" if v["above_bound"] else ""),
          v["rounds"], v["best_n"], f"{v['bound']:.0f}" if v["bound"] else "-", v["formula"]] for k, v in peak.items()])
    table = []
    for r in rows:
        if "skipped" in r:
            table.append([r["backbone"], r["variant"], "-", "-", "-", "-", "-", "-", f"skipped: {r['skipped']}"])
            continue
        bound = peak[r["dtype"]]["bound"]
        note = f"first call {r['first_call_s']:.1f} s"
        if r["variant"] == "extract_features":
            note += f"; amp {r['amp']}, backend {r['backend']}"
        table.append([r["backbone"], r["variant"], f"{r['images_per_s']:.1f}", f"{r['speedup_vs_fp32']:.2f}x" if "speedup_vs_fp32" in r else "-",
                      f"{100 * r['vs_fastest_variant']:.0f}%" if "vs_fastest_variant" in r else "-",
                      f"{r['gflops']:.1f} / {r['best_gflops']:.1f}",
                      f"{100 * r['fraction_of_peak']:.0f}% / {100 * r['best_fraction_of_peak']:.0f}% of {r['dtype']}",
                      f"{100 * r['best_gflops'] / bound:.0f}%" if bound else "-", note])
    second = common.md_table(["backbone", "variant", "img/s (median)", "vs fp32", "of fastest", "GFLOP/s median / best",
                              "of matmul peak: median / best", "best of bound", "note"], table)
    return f"Clock: {ghz}\n\n{first}\n\n{second}"


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet50", "resnet18"])
    p.add_argument("--variants", nargs="+", choices=VARIANTS,
                   default=list(VARIANTS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per variant and matmul (medians reported)")
    p.add_argument("--clock-ghz", type=float, default=None, help="clock for the theoretical bound (default: measured)")
    p.add_argument("--force-bf16", action="store_true", help="run bf16 variants even where bf16 is emulated")
    args = p.parse_args(argv)
    sizes = PEAK_SIZES
    if args.quick:  # smoke test: the whole path at toy sizes, no compilation
        args.backbones, args.size, args.batch, args.rounds, sizes = ["resnet18"], 32, 2, 2, (128, 256)
        args.variants = [v for v in args.variants if not v.startswith(("compile", "openvino")) and v != "extract_features"]
        args.threads = args.threads or 1
    threads = common.setup_torch(args.threads)
    device = resolve_device(args.device)
    load_before = common.loadavg()
    native = device.type == "cuda" or cpu_supports_bf16()
    skip_bf16 = not native and not args.force_bf16 and not args.quick
    ident = cpu_bound.cpu_identity()
    clock = cpu_bound.clock_ghz(args.clock_ghz, ident) if device.type == "cpu" else (None, "not a CPU run")
    bounds = {d: cpu_bound.theoretical_peak(d, threads, clock[0], ident) if device.type == "cpu"
              else {"gflops": None, "formula": "GPU: not computed"} for d in DTYPES}
    with common.section("matmul calibration"):
        peaks = peak_fns(sizes, device, 0.02 if args.quick else 0.15)
    rows: list[dict[str, Any]] = []
    rounds: dict[str, list[dict[str, Any]]] = {d: [] for d in DTYPES}
    for backbone in args.backbones:
        more, pr = run_backbone(backbone, args, device, skip_bf16, peaks)
        rows += more
        for d, rs in pr.items():
            rounds[d] += rs
    peak = summarise_peaks(rounds, bounds)
    for r in rows:
        if "gflops" in r:
            r["fraction_of_peak"] = r["gflops"] / peak[r["dtype"]]["median"]
            r["best_fraction_of_peak"] = r["best_gflops"] / peak[r["dtype"]]["best"]

    info = common.machine_info()
    print(f"\nBackbone inference, batch {args.batch} x 3 x {args.size} x {args.size}, {args.rounds} rounds "
          f"interleaved with the matmul peaks; {common.machine_line(info)}\n")
    print(tables(rows, peak, clock))
    path = common.write_results("backbone_throughput", {
        "settings": {k: (str(v) if k == "out" else v) for k, v in vars(args).items()},
        "clock_ghz": clock[0], "clock_source": clock[1], "matmul_peak_rounds": rounds, "matmul_peak": peak,
        "bf16_skipped": skip_bf16, "results": rows,
    }, args.out, load_before)
    print(f"\nwritten {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
