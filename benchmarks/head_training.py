"""Head-only STFN training on cached features: videos/s and the time of one epoch.

Writes a features folder in the layout of ``stfn extract-features`` (``features.json`` and
``train_{rgb,flow}.npy``, float16 ``(N, T, C)``) sized like UCF101 split 1 (9537 training videos,
25 frames, 2048-d resnet50 features, two streams: 1.95 GB), then measures, in one run:

1. compute: videos/s of the training step alone (forward, loss, backward, clip, SGD) on a batch
   already in memory, for each ``--amp`` setting, round-robin;
2. loader: videos/s of the engine's loader over the cache (``FeatureDataset`` + ``build_loader``,
   memory-mapped ``.npy``) alone, with 0 and ``--workers`` workers;
3. epoch: one whole epoch of ``stfn.engine.epoch.train_one_epoch`` with that loader (what
   ``stfn train`` with ``data.features=DIR`` does per epoch), at the first ``--amp`` setting.

Target: an epoch under 60 s on a 2-core CPU. ``--profile`` adds a torch.profiler table of the step.

Usage::

    python benchmarks/head_training.py                     # UCF101 size, batch 32, fp32
    python benchmarks/head_training.py --amp none bf16 --batch 8 32 --profile
    python benchmarks/head_training.py --quick             # smoke test: 64 videos, 256-d
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
from torch import nn

from stfn.config import STREAMS
from stfn.runtime import cpu_supports_bf16, resolve_device


def write_cache(root: Path, videos: int, frames: int, dim: int, classes: int = 101) -> float:
    """A features folder with ``videos`` random videos; returns the seconds it took.

    The values are a random block of 256 videos repeated (the speed does not depend on them)."""
    from stfn.fileio import atomic_write_json

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    block = rng.standard_normal((min(256, videos), frames, dim), dtype=np.float32).astype(np.float16)
    for s in STREAMS:
        arr = np.lib.format.open_memmap(root / f"train_{s}.npy", mode="w+", dtype=np.float16,
                                        shape=(videos, frames, dim))
        for i in range(0, videos, len(block)):
            n = min(len(block), videos - i)
            arr[i:i + n] = block[:n]
        arr.flush()
        del arr
    names = [f"Class{c:03d}" for c in range(classes)]
    labels = [int(v) for v in rng.integers(0, classes, videos)]
    keys = [f"{names[y]}/v_{names[y]}_g{i // 7 % 25 + 1:02d}_c{i % 7 + 1:02d}_{i}" for i, y in enumerate(labels)]
    atomic_write_json(root / "features.json", {
        "version": 1, "dtype": "float16", "source": "benchmark", "source_checkpoint": "", "streams": list(STREAMS),
        "frames": frames, "feature_dim": dim, "classes": names, "model": {}, "data": {},
        "subsets": {"train": {"videos": keys, "labels": labels, "identity": {"dataset": "benchmark"}}}})
    return time.perf_counter() - start


def make_cfg(root: Path, args: Any, amp: str, batch: int, frames: int) -> Any:
    from stfn.config import Config

    cfg = Config()
    cfg.model.arch, cfg.model.backbone, cfg.model.num_classes = "stfn", args.backbone, 101
    cfg.data.features, cfg.data.frames, cfg.data.num_workers = str(root), frames, args.workers
    cfg.train.amp, cfg.train.batch_size, cfg.train.epochs = amp, batch, 1
    return cfg


def build_head(cfg: Any, device: torch.device) -> nn.Module:
    from stfn.models import build_model

    torch.manual_seed(0)
    return build_model(cfg.model, with_backbones=False).to(device).train()


class Limited:
    """The first ``n`` batches of a loader, with a ``len`` (what ``train_one_epoch`` needs)."""

    def __init__(self, loader: Any, n: int) -> None:
        self.loader, self.n = loader, min(n, len(loader))

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        for i, batch in enumerate(self.loader):
            if i >= self.n:
                break
            yield batch


def make_step(cfg: Any, device: torch.device, reference: bool = False) -> Any:
    """The engine's training step (autocast forward, loss, backward, clip, SGD) on one in-memory batch;
    the model goes through ``torch.compile`` with ``train.compile``, as in the engine. ``reference``:
    the head's temporal layers run PyTorch's own Conv1d / BatchNorm1d / MaxPool1d kernels instead of
    the matmul formulation of ``stfn.models.temporal`` (the speed before that fast path)."""
    from stfn.engine.optim import build_optimizer
    from stfn.runtime import autocast_context, resolve_amp

    model = build_head(cfg, device)
    if reference:
        from stfn.models.temporal import to_reference

        model = to_reference(model)
    dtype = resolve_amp(cfg.train.amp, device, cfg.train.channels_last)[0]
    opt = build_optimizer(model, cfg.train)
    params = [p for p in model.parameters() if p.requires_grad]
    net = torch.compile(model) if cfg.train.compile else model
    g = torch.Generator().manual_seed(0)
    b, t = cfg.train.batch_size, cfg.data.frames
    x = {f"{s}_feat": torch.randn(b, t, model.feature_dim, generator=g).to(device) for s in STREAMS}
    y = torch.randint(0, cfg.model.num_classes, (b,), generator=g).to(device)
    crit = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast_context(device, dtype):
            logits = net(x)
        crit(logits.float(), y).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step.dtype = str(dtype).replace("torch.", "")
    return step


def amp_settings(amps: list[str], device: torch.device) -> list[str]:
    """``amps`` without those that resolve to the autocast dtype of an earlier one (``auto`` is fp32
    on a CPU without hardware bf16, so ``none`` would time the same thing twice)."""
    from stfn.runtime import resolve_amp

    out, seen = [], set()
    for amp in amps:
        dtype = resolve_amp(amp, device, True)[0]
        if dtype not in seen:
            out.append(amp)
            seen.add(dtype)
    return out


def compute_rates(root: Path, args: Any, device: torch.device) -> dict[str, Any]:
    """Videos/s of the training step on an in-memory batch, per (amp, batch, frames, compile),
    round-robin. Emulated bf16 (no hardware support) is timed once, one step: it is that slow."""
    fns, info = {}, {}
    compiles = [False, True] if args.compile else [False]
    for amp, batch, frames, comp in ((a, b, t, c) for a in amp_settings(args.amp, device)
                                     for b in args.batch for t in args.train_frames for c in compiles):
        key = f"{amp}/b{batch}/T{frames}" + ("/compile" if comp else "")
        cfg = make_cfg(root, args, amp, batch, frames)
        cfg.train.compile = comp
        fns[key] = make_step(cfg, device)
        info[key] = {"amp": amp, "dtype": fns[key].dtype, "batch": batch, "frames": frames, "compile": comp,
                     "reference": False}
    if args.reference:  # the first setting again, with PyTorch's own temporal kernels
        amp, batch, frames = args.amp[0], args.batch[0], args.train_frames[0]
        key = f"{amp}/b{batch}/T{frames}/reference"
        fns[key] = make_step(make_cfg(root, args, amp, batch, frames), device, reference=True)
        info[key] = {"amp": amp, "dtype": fns[key].dtype, "batch": batch, "frames": frames, "compile": False,
                     "reference": True}
    native = device.type == "cuda" or cpu_supports_bf16()
    slow = {k for k in fns if info[k]["dtype"] == "bfloat16" and not native}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for k, fn in fns.items():  # warm-up (compiles)
        if k not in slow:
            with common.section(f"warm-up {k}"):
                fn()
    for r in range(args.rounds):
        for k in fns if r % 2 == 0 else list(fns)[::-1]:
            if k in slow and r > 0:
                continue
            n = 1 if k in slow else args.calls
            times[k].append(common.timed(lambda fn=fns[k], n=n: [fn() for _ in range(n)], device) / n)
    out = {}
    for k, ts in times.items():
        s = common.stats(ts)
        rate = info[k]["batch"] / s["median"]
        out[k] = {**info[k], "step_s": s, "videos_per_s": rate, "epoch_s_compute": args.videos / rate}
    return out


def flops_per_video(root: Path, args: Any, frames: int) -> float:
    """Training FLOPs of one video of ``frames`` positions through the head (forward + backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_head(make_cfg(root, args, "none", 2, frames), torch.device("cpu"))
    x = {f"{s}_feat": torch.randn(2, frames, args.dim) for s in STREAMS}
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 2


def loader_rate(root: Path, args: Any, workers: int, batch: int) -> float:
    """Videos/s of the engine's training loader over the cache (no model)."""
    from stfn.data.datasets import build_loader
    from stfn.data.features import build_run_dataset

    cfg = make_cfg(root, args, "none", batch, args.train_frames[0])
    loader = build_loader(build_run_dataset(cfg, "train"), batch, train=True, workers=workers, seed=0)
    n = min(len(loader), args.loader_batches)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    seen = 0
    for _ in range(n - 1):
        seen += len(next(it)["label"])
    rate = seen / (time.perf_counter() - start)
    del it, loader
    return rate


def run_epoch(root: Path, args: Any, amp: str, batch: int, device: torch.device, max_batches: int) -> dict[str, Any]:
    """``train_one_epoch`` over the cache (the first ``max_batches`` batches; the time is scaled up)."""
    from stfn.data.datasets import build_loader
    from stfn.data.features import build_run_dataset
    from stfn.engine.epoch import train_one_epoch
    from stfn.engine.optim import build_optimizer, build_scheduler
    from stfn.runtime import resolve_amp

    cfg = make_cfg(root, args, amp, batch, args.train_frames[0])
    model = build_head(cfg, device)
    dtype = resolve_amp(amp, device, cfg.train.channels_last)[0]
    loader = build_loader(build_run_dataset(cfg, "train"), batch, train=True, workers=args.workers, seed=0)
    limited = Limited(loader, max_batches)
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train, len(limited))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    stats = train_one_epoch(model, criterion, opt, sched, limited, device, 0, amp_dtype=dtype,
                            accumulate=cfg.train.accumulate, clip_grad=cfg.train.clip_grad,
                            partial_bn=cfg.train.partial_bn).to_dict()
    full = len(loader)
    return {"amp": amp, "dtype": str(dtype), "batch": batch, "frames": args.train_frames[0], "workers": args.workers,
            "batches": stats["steps"],
            "of_batches": full, "seconds": stats["seconds"], "videos_per_s": stats["samples_per_s"],
            "epoch_s": stats["seconds"] * full / max(stats["steps"], 1), "extrapolated": stats["steps"] < full}


def profile_step(root: Path, args: Any, device: torch.device) -> str:
    """torch.profiler table (top ops by self CPU time) of a few training steps at the first setting."""
    from torch.profiler import ProfilerActivity, profile

    from stfn.engine.optim import build_optimizer
    from stfn.runtime import autocast_context, resolve_amp

    cfg = make_cfg(root, args, args.amp[0], args.batch[0], args.train_frames[0])
    model = build_head(cfg, device)
    dtype = resolve_amp(args.amp[0], device, True)[0]
    opt = build_optimizer(model, cfg.train)
    x = {f"{s}_feat": torch.randn(args.batch[0], args.train_frames[0], args.dim, device=device) for s in STREAMS}
    y = torch.randint(0, 101, (args.batch[0],), device=device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(5):
            with autocast_context(device, dtype):
                loss = nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=9537, help="videos in the cache (UCF101 split 1 train: 9537)")
    p.add_argument("--frames", type=int, default=25, help="cached frames per video")
    p.add_argument("--train-frames", type=int, nargs="+", default=[8, 25],
                   help="data.frames: positions per training sample (stfn default 8); the first runs the epoch")
    p.add_argument("--dim", type=int, default=2048, help="feature size (resnet50: 2048)")
    p.add_argument("--backbone", default="", help="model.backbone whose feature size is --dim (default: by --dim)")
    p.add_argument("--batch", type=int, nargs="+", default=[32, 8], help="train.batch_size; the first one runs the epoch")
    p.add_argument("--amp", nargs="+", default=["auto", "none", "bf16"],
                   help="train.amp settings (those resolving to an earlier one's dtype are dropped); the first "
                        "runs the epoch")
    p.add_argument("--workers", type=int, default=2, help="data.num_workers of the epoch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=5, help="steps per timed compute round")
    p.add_argument("--loader-batches", type=int, default=40)
    p.add_argument("--epoch-batches", type=int, default=0, help="cap on the epoch's batches (0: the whole epoch)")
    p.add_argument("--cache", type=Path, help="keep the features folder here (reused when it matches)")
    p.add_argument("--compile", action="store_true", help="also time each setting with train.compile (torch.compile)")
    p.add_argument("--profile", action="store_true", help="add a torch.profiler table of the training step")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the run of the first setting with PyTorch's own Conv1d/BatchNorm1d/MaxPool1d kernels")
    args = p.parse_args(argv)
    if args.quick:
        args.videos, args.frames, args.dim, args.batch, args.rounds, args.calls = 64, 8, 512, [8], 1, 1
        args.train_frames = [4]
        args.amp, args.loader_batches, args.workers, args.threads = ["none"], 4, 0, args.threads or 1
    if max(args.train_frames) > args.frames or min(args.train_frames) < 1:
        p.error(f"--train-frames must be between 1 and --frames ({args.frames})")
    args.backbone = args.backbone or {512: "resnet18", 2048: "resnet50", 256: "cnn_small"}.get(args.dim, "")
    if not args.backbone:
        p.error("--dim has no default backbone; pass --backbone with a network of that feature size")
    common.setup_torch(args.threads)
    device = resolve_device(args.device)
    load_before = common.loadavg()
    with tempfile.TemporaryDirectory(prefix="stfn-bench-") as tmp:
        root = args.cache or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        meta = root / "features.json"
        same = meta.is_file() and all(np.load(root / f"train_{s}.npy", mmap_mode="r").shape == (args.videos, args.frames,
                                      args.dim) for s in STREAMS if (root / f"train_{s}.npy").is_file())
        with common.section(f"feature cache {args.videos} x {args.frames} x {args.dim} x 2 streams"):
            write_s = 0.0 if same else write_cache(root, args.videos, args.frames, args.dim)
        flops = {t: flops_per_video(root, args, t) for t in args.train_frames}
        with common.section("compute"):
            matmul = common.matmul_peak(torch.float32, device, 0.2 if args.quick else 1.0)
            compute = compute_rates(root, args, device)
        with common.section("loader"):
            loader = {str(w): loader_rate(root, args, w, args.batch[0]) for w in sorted({0, args.workers})}
        with common.section("epoch"):
            epoch = run_epoch(root, args, args.amp[0], args.batch[0], device, args.epoch_batches or 10**9)
        prof = profile_step(root, args, device) if args.profile else ""

    info = common.machine_info()
    gb = 2 * args.videos * args.frames * args.dim * 2 / 1e9
    print(f"\nSTFN head training on cached features: {args.videos} videos x {args.frames} frames x {args.dim}-d "
          f"x 2 streams ({gb:.2f} GB float16, written in {write_s:.1f} s); training FLOPs per video: "
          + ", ".join(f"T={t}: {f / 1e6:.0f} M" for t, f in flops.items()) + f"; {common.machine_line(info)}\n")
    peak = matmul["gflops"]
    rows = [[v["amp"] + (" + compile" if v["compile"] else "") + (" (reference kernels)" if v["reference"] else ""),
             v["batch"], v["frames"],
             v["dtype"] if v["dtype"] != "None" else "fp32",
             f"{v['videos_per_s']:.0f}", f"{v['epoch_s_compute']:.1f}",
             f"{v['videos_per_s'] * flops[v['frames']] / 1e9:.1f}",
             f"{100 * v['videos_per_s'] * flops[v['frames']] / 1e9 / peak:.0f}%"] for v in compute.values()]
    print(common.md_table(["train.amp", "batch", "data.frames", "compute dtype", "compute videos/s",
                           "compute-only epoch s", "GFLOP/s", "of fp32 matmul peak"], rows))
    print(f"\nfp32 matmul peak in this run: {peak:.1f} GFLOP/s (n={matmul['n']})")
    print()
    print(common.md_table(["loader workers", "videos/s"], [[w, f"{r:.0f}"] for w, r in loader.items()]))
    print()
    ok = "yes" if epoch["epoch_s"] < 60 else "NO"
    print(common.md_table(
        ["epoch (train_one_epoch)", "batch", "data.frames", "workers", "videos/s", "epoch s", "under 60 s"],
        [[f"amp {epoch['amp']}" + (" (extrapolated)" if epoch["extrapolated"] else ""), epoch["batch"],
          epoch["frames"], epoch["workers"], f"{epoch['videos_per_s']:.0f}", f"{epoch['epoch_s']:.1f}", ok]]))
    if prof:
        print("\n```\n" + prof + "```")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    path = common.write_results("head_training", {
        "settings": settings, "cache_gb": gb, "cache_write_s": write_s, "flops_per_video": flops,
        "fp32_matmul_peak": matmul, "compute": compute, "loader_videos_per_s": loader, "epoch": epoch, "profile": prof,
    }, args.out, load_before)
    print(f"\nwritten {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
