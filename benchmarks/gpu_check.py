"""``make gpu-check``: one command that exercises the GPU path end to end, in under 5 minutes.

On a CUDA machine, each check runs the package's own code and records its numbers:

===========  ================================================================================
precision    a two-stream resnet50 STFN training step at 224 px (batch 2 x 4 frames, L=5) in
             fp32, bf16 autocast and fp16 autocast with a GradScaler; samples/s of each and,
             from the same weights on one batch, the loss and logits of bf16 / fp16 against fp32
compile      ``torch.compile`` of that step: compile seconds, speed-up, the break-even in frames
             (``stfn.runtime.COMPILE_BREAK_EVEN`` should hold it)
ddp          DistributedDataParallel with NCCL, one process (world size 1); two processes when
             there are two GPUs (an all-reduce and a DDP step that agree across ranks)
raft         RAFT-small flow batched on the GPU: pairs/s at 320x240; then ``stfn prepare --flow
             raft`` on the real videos of ``../shared/videos`` (pretrained weights where the file
             is in the torch hub cache, else random weights, said so)
jpeg         ``data.jpeg_decoder: nvjpeg`` against opencv: images/s and the pixel difference
predict      ``stfn predict`` latency (resnet18 STFN, 224 px, random weights) on a real video
loader       the loader's samples/s (opencv, 0 workers, this process) against the training
             step's consumption, and the cores that would take
===========  ================================================================================

On a machine without CUDA the same checks run their CPU fallbacks at small sizes (bf16 where the CPU
has it, gloo instead of NCCL, RAFT on the CPU, the opencv decoder) and each GPU-only part is listed
as skipped with the reason. Writes ``<out>/gpu_check.json`` and ``<out>/gpu_check.md``; exits 1 when
any check failed (a skip is not a failure).

Usage::

    make gpu-check                                 # = python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --only precision ddp
    python benchmarks/gpu_check.py --quick         # CPU smoke test: toy sizes, no compile, ~20 s
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
from torch import nn

from stfn.fileio import atomic_write_text
from stfn.runtime import cpu_supports_bf16, resolve_device

SHARED_VIDEOS = common.SHARED / "videos"
CHECKS = ("precision", "compile", "ddp", "raft", "jpeg", "predict", "loader")


class Skip(Exception):
    """A check (or part) that cannot run on this machine; the message says why."""


def sizes(args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    """Network and input sizes: the real ones on CUDA, small ones for the CPU fallbacks."""
    if args.quick:
        return {"backbone": "cnn_small", "px": 64, "batch": 2, "frames": 2, "raft_hw": (128, 128), "pairs": 2}
    if cuda:
        return {"backbone": "resnet50", "px": 224, "batch": 2, "frames": 4, "raft_hw": (240, 320), "pairs": 32}
    return {"backbone": "resnet18", "px": 112, "batch": 1, "frames": 2, "raft_hw": (240, 320), "pairs": 2}


def stfn_model(backbone: str, classes: int = 101) -> nn.Module:
    from stfn.config import ModelConfig
    from stfn.models import build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(arch="stfn", backbone=backbone, num_classes=classes, pretrained=False,
                                   streams=["rgb", "flow"], flow_length=5))


def batch_for(sz: dict[str, Any], device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b, t, px = sz["batch"], sz["frames"], sz["px"]
    x = {"rgb": torch.randn(b, t, 3, px, px, generator=g), "flow": torch.randn(b, t, 10, px, px, generator=g)}
    return {k: v.to(device) for k, v in x.items()}, torch.randint(0, 101, (b,), generator=g).to(device)


def train_step(model: nn.Module, net: Any, x: dict, y: torch.Tensor, device: torch.device, dtype: torch.dtype | None,
               scaler: torch.amp.GradScaler, opt: torch.optim.Optimizer) -> tuple[float, torch.Tensor]:
    """One step (forward under autocast, loss, scaled backward, clip, SGD); the loss and fp32 logits."""
    from stfn.runtime import autocast_context

    torch.manual_seed(1)  # the same dropout masks in every precision
    with autocast_context(device, dtype):
        logits = net(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    nn.utils.clip_grad_norm_(model.parameters(), 40.0)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return float(loss), logits.detach().float()


def check_precision(args: argparse.Namespace, device: torch.device, state: dict) -> dict[str, Any]:
    sz = sizes(args, device.type == "cuda")
    base = stfn_model(sz["backbone"]).to(device).to(memory_format=torch.channels_last).train()
    x, y = batch_for(sz, device)
    precisions: dict[str, tuple[torch.dtype | None, bool]] = {"fp32": (None, False)}
    skipped = {}
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        precisions["bf16"] = (torch.bfloat16, False)
    elif device.type == "cpu" and cpu_supports_bf16():
        precisions["bf16"] = (torch.bfloat16, False)
    else:
        skipped["bf16"] = "no native bf16 on this device"
    if device.type == "cuda":
        precisions["fp16"] = (torch.float16, True)
    else:
        skipped["fp16"] = "fp16 autocast with loss scaling needs CUDA"
    out: dict[str, Any] = {"sizes": {k: v for k, v in sz.items() if k not in ("raft_hw", "pairs")}, "precisions": {},
                           "skipped": skipped}
    ref = None
    for name, (dtype, scaled) in precisions.items():
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=scaled)
        loss, logits = train_step(model, model, x, y, device, dtype, scaler, opt)  # first: the agreement batch
        steps = 2 if args.quick else 5
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model, model, x, y, device, dtype, scaler, opt)
        common.sync(device)
        step_s = (time.perf_counter() - start) / steps
        row = {"loss": loss, "step_s": step_s, "samples_per_s": sz["batch"] / step_s,
               "frames_per_s": sz["batch"] * sz["frames"] / step_s}
        if ref is None:
            ref = (loss, logits)
        else:
            row["loss_rel_diff"] = abs(loss - ref[0]) / max(abs(ref[0]), 1e-6)
            row["logits_rel_diff"] = float((logits - ref[1]).abs().max() / ref[1].abs().max().clamp_min(1e-6))
            row["logits_cosine"] = float(nn.functional.cosine_similarity(logits.flatten(), ref[1].flatten(), dim=0))
            # bf16 keeps 8 bits of mantissa: a deep random-init network's logits move by a few percent,
            # their direction (the ranking of classes) must not
            if not (row["loss_rel_diff"] < 0.05 and row["logits_cosine"] > 0.99):
                raise AssertionError(f"{name} disagrees with fp32: loss {row['loss_rel_diff']:.3g} (relative), "
                                     f"logits cosine {row['logits_cosine']:.4f}")
        out["precisions"][name] = row
    fastest = max(out["precisions"].items(), key=lambda kv: kv[1]["samples_per_s"])
    state["step_samples_per_s"] = fastest[1]["samples_per_s"]
    state["step_precision"] = fastest[0]
    return out


def check_compile(args: argparse.Namespace, device: torch.device, state: dict) -> dict[str, Any]:
    if args.quick and device.type == "cpu":
        raise Skip("--quick on a CPU: compiling a training step takes minutes here; run without --quick")
    sz = sizes(args, device.type == "cuda")
    from stfn.runtime import resolve_amp

    dtype, scaled = resolve_amp("auto", device, True)
    x, y = batch_for(sz, device)
    rows = {}
    for variant in ("eager", "compile"):
        model = stfn_model(sz["backbone"]).to(device).to(memory_format=torch.channels_last).train()
        net = torch.compile(model) if variant == "compile" else model
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=scaled)
        start = time.perf_counter()
        train_step(model, net, x, y, device, dtype, scaler, opt)
        common.sync(device)
        first = time.perf_counter() - start
        steps = 2 if args.quick else 5
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model, net, x, y, device, dtype, scaler, opt)
        common.sync(device)
        rows[variant] = {"first_call_s": first, "step_s": (time.perf_counter() - start) / steps}
    saving = rows["eager"]["step_s"] - rows["compile"]["step_s"]
    compile_s = rows["compile"]["first_call_s"] - rows["eager"]["first_call_s"]
    frames = sz["batch"] * sz["frames"]
    return {**rows, "speedup": rows["eager"]["step_s"] / rows["compile"]["step_s"], "compile_s": compile_s,
            "break_even_frames": compile_s / saving * frames if saving > 0 else None}


def check_ddp(args: argparse.Namespace, device: torch.device, state: dict) -> dict[str, Any]:
    from ddp_probe import run_ddp

    if device.type != "cuda":
        return {"gloo x 1 (CPU fallback)": run_ddp(1, "gloo"), "skipped": {"nccl": "no CUDA device"}}
    out: dict[str, Any] = {"nccl x 1": run_ddp(1, "nccl")}
    if torch.cuda.device_count() >= 2:
        out["nccl x 2"] = run_ddp(2, "nccl")
    else:
        out["skipped"] = {"nccl x 2": f"{torch.cuda.device_count()} GPU"}
    return out


def _raft_weights() -> str:
    """``default`` where torchvision's RAFT-small file is in the hub cache, else ``random`` (no network)."""
    from torchvision.models.optical_flow import Raft_Small_Weights

    name = Path(Raft_Small_Weights.DEFAULT.url).name
    return "default" if (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file() else "random"


def check_raft(args: argparse.Namespace, device: torch.device, state: dict) -> dict[str, Any]:
    from stfn.data.video.raft import RaftFlow

    sz = sizes(args, device.type == "cuda")
    weights = _raft_weights()
    h, w = sz["raft_hw"]
    flow = RaftFlow("small", weights, str(device), iters=12, batch_size=8 if device.type == "cuda" else 2)
    frames = np.random.default_rng(0).integers(0, 255, (sz["pairs"] + 1, h, w, 3), dtype=np.uint8)
    flow(frames[:3])  # warm-up
    common.sync(device)
    start = time.perf_counter()
    out = flow(frames)
    common.sync(device)
    pairs_s = sz["pairs"] / (time.perf_counter() - start)
    if out.shape != (sz["pairs"], h, w, 2) or not np.isfinite(out).all():
        raise AssertionError(f"RAFT gave {out.shape}, finite: {np.isfinite(out).all()}")
    row: dict[str, Any] = {"weights": weights, "size": f"{w}x{h}", "pairs_per_s": pairs_s}
    videos = sorted(p for p in SHARED_VIDEOS.glob("*") if p.suffix in (".avi", ".mp4", ".mkv") and "corrupt" not in p.name)
    if device.type != "cuda":
        row["skipped"] = {"prepare --flow raft": "RAFT on a CPU runs at ~0.5 pairs/s: minutes per video"}
    elif not videos:
        row["skipped"] = {"prepare --flow raft": f"no videos in {SHARED_VIDEOS}"}
    else:
        from stfn.cli import main as cli

        with tempfile.TemporaryDirectory(prefix="stfn-gpucheck-") as tmp:
            src = Path(tmp) / "videos"
            src.mkdir()
            for v in videos[:3]:
                (src / v.name).symlink_to(v.resolve())
            start = time.perf_counter()
            rc = cli(["prepare", str(src), str(Path(tmp) / "out"), "--flow", "raft", "--raft-weights", weights,
                      "--device", str(device), "--short-side", "240", "--quiet"])
            row["prepare"] = {"videos": len(videos[:3]), "rc": rc, "seconds": time.perf_counter() - start}
            if rc != 0:
                raise AssertionError(f"stfn prepare --flow raft exited {rc}")
    return row


def check_jpeg(args: argparse.Namespace, device: torch.device, state: dict) -> dict[str, Any]:
    from torchvision.io import write_jpeg

    from stfn.data.datasets import decode_jpegs

    n = 16 if args.quick else 64
    g = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="stfn-gpucheck-") as tmp:
        paths = []
        for i in range(n):
            img = (torch.rand(3, 256, 340, generator=g) * 255).to(torch.uint8)
            paths.append(Path(tmp) / f"img_{i:05d}.jpg")
            write_jpeg(img, str(paths[-1]), quality=95)
        decoders = ["opencv"] + (["nvjpeg"] if device.type == "cuda" else [])
        rows, images = {}, {}
        for dec in decoders:
            decode_jpegs([p.read_bytes() for p in paths[:4]], False, dec, tmp)  # warm-up (nvJPEG handle, CUDA context)
            start = time.perf_counter()
            images[dec] = decode_jpegs([p.read_bytes() for p in paths], False, dec, tmp)
            rows[dec] = {"images_per_s": n / (time.perf_counter() - start)}
    out: dict[str, Any] = {"decoders": rows}
    if "nvjpeg" in images:
        diff = (images["nvjpeg"].int() - images["opencv"].int()).abs().float().mean().item()
        out["mean_abs_diff"] = diff
        if diff > 2.0:
            raise AssertionError(f"nvjpeg and opencv differ by {diff:.2f} grey levels on average")
    else:
        out["skipped"] = {"nvjpeg": "no CUDA device"}
    return out


def check_predict(args: argparse.Namespace, device: torch.device, state: dict) -> dict[str, Any]:
    from stfn.config import config_to_dict, load_config
    from stfn.models import build_model
    from stfn.predict import Predictor

    video = SHARED_VIDEOS / "test.avi"
    if not video.is_file():
        raise Skip(f"{video} is not there")
    preset = ("configs/tiny.yaml", []) if args.quick else ("configs/stfn_resnet18.yaml", ["model.pretrained=false"])
    cfg = load_config(common.REPO / preset[0], [*preset[1], "model.num_classes=101"])
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="stfn-gpucheck-") as tmp:
        ckpt = Path(tmp) / "model.pt"
        torch.save({"model": build_model(cfg.model).state_dict(), "config": config_to_dict(cfg),
                    "classes": [f"c{i}" for i in range(101)]}, ckpt)
        p = Predictor.from_checkpoint(ckpt, device=str(device), crops=1)
        p.predict(video)  # warm-up
        runs = [p.predict(video)["timings"] for _ in range(2 if args.quick else 3)]
    med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    return {"config": preset[0], "median_seconds": med, "settings": {k: p.settings()[k] for k in ("device", "amp", "frames")}}


def check_loader(args: argparse.Namespace, device: torch.device, state: dict) -> dict[str, Any]:
    import loader as loader_bench

    la = argparse.Namespace(frames=8, flow_length=5, streams=["rgb", "flow"], scale_size=256, crop_size=224,
                            batch_size=4, batches=2 if args.quick else 6)
    with tempfile.TemporaryDirectory(prefix="stfn-gpucheck-") as tmp:
        loader_bench.make_tree(Path(tmp), 2 if args.quick else 4, 16 if args.quick else 48, 340, 256)
        wall, per_cpu = loader_bench.loader_rate(Path(tmp), "opencv", 0, la)
    out: dict[str, Any] = {"samples_per_s": wall, "samples_per_cpu_s": per_cpu}
    step = state.get("step_samples_per_s")
    if step:
        out.update(step_samples_per_s=step, step_precision=state["step_precision"], loader_over_step=wall / step,
                   cores_to_feed=step / per_cpu)
    else:
        out["skipped"] = {"against the step": "the precision check did not run"}
    return out


def run_check(name: str, fn: Callable, args: argparse.Namespace, device: torch.device, state: dict) -> dict[str, Any]:
    start = time.perf_counter()
    with common.section(f"gpu-check {name}"):
        try:
            result = {"status": "ok", **fn(args, device, state)}
        except Skip as e:
            result = {"status": "skipped", "reason": str(e)}
        except Exception as e:  # a failed check is reported, the others still run
            result = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    result["seconds"] = time.perf_counter() - start
    return result


def summary(name: str, r: dict[str, Any]) -> str:
    """One table cell of what a check found."""
    if r["status"] != "ok":
        return r.get("reason") or r.get("error", "")
    if name == "precision":
        return "; ".join(f"{k} {v['samples_per_s']:.2f} samples/s" + (f" (loss {v['loss_rel_diff']:.1e}, logits "
                         f"{v['logits_rel_diff']:.1e} from fp32, cosine {v['logits_cosine']:.4f})" if "loss_rel_diff" in v
                         else "")
                         for k, v in r["precisions"].items())
    if name == "compile":
        be = r["break_even_frames"]
        return (f"compile {r['compile_s']:.0f} s, step {r['speedup']:.2f}x, break-even "
                + (f"{be:.0f} frames" if be else "never"))
    if name == "ddp":
        return ", ".join(k for k in r if k not in ("status", "seconds", "skipped")) + ": all-reduce and gradients agree"
    if name == "raft":
        prep = r.get("prepare")
        return (f"{r['pairs_per_s']:.1f} pairs/s at {r['size']} ({r['weights']} weights)"
                + (f"; prepare {prep['videos']} videos in {prep['seconds']:.0f} s" if prep else ""))
    if name == "jpeg":
        return ", ".join(f"{k} {v['images_per_s']:.0f} img/s" for k, v in r["decoders"].items()) + (
            f", mean diff {r['mean_abs_diff']:.2f}" if "mean_abs_diff" in r else "")
    if name == "predict":
        m = r["median_seconds"]
        return f"{r['config']}: total {m['total'] * 1000:.0f} ms, network {m['network'] * 1000:.0f} ms"
    if name == "loader":
        text = f"{r['samples_per_s']:.1f} samples/s ({r['samples_per_cpu_s']:.1f} per CPU-s)"
        if "cores_to_feed" in r:
            text += f" vs step {r['step_samples_per_s']:.1f} samples/s: {r['cores_to_feed']:.1f} cores to feed it"
        return text
    return ""


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=CHECKS, help="run only these checks")
    args = p.parse_args(argv)
    common.setup_torch(args.threads)
    device = resolve_device(args.device)
    load_before = common.loadavg()
    state: dict[str, Any] = {}
    fns = {n: globals()[f"check_{n}"] for n in CHECKS if not args.only or n in args.only}
    results = {n: run_check(n, fn, args, device, state) for n, fn in fns.items()}
    for r in results.values():  # skipped parts of checks that ran
        r.setdefault("skipped", {})
    info = common.machine_info()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "no CUDA device: CPU fallbacks"
    table = common.md_table(["check", "status", "s", "result", "skipped here"],
                            [[n, r["status"], f"{r['seconds']:.0f}", summary(n, r),
                              "; ".join(f"{k}: {v}" for k, v in r["skipped"].items()) or "-"]
                             for n, r in results.items()])
    text = f"gpu-check on {device} ({where}){' --quick' if args.quick else ''}; {common.machine_line(info)}\n\n{table}\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "gpu_check.md", text)
    path = common.write_results("gpu_check", {"device": str(device), "quick": args.quick, "checks": results},
                                args.out, load_before)
    print(f"written {path}", file=sys.stderr)
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
