"""Training-loader throughput against the raw JPEG decode rate, for both JPEG decoders.

Builds a small prepared tree in a temporary folder (``--videos`` videos of ``--length`` frames at
``--size`` WxH, RGB JPEGs plus flow_x / flow_y grayscale JPEGs and a manifest.json, as ``stfn prepare``
writes them), then measures:

1. raw decode: images per CPU-second of file read + ``decode_jpegs`` for RGB frames and gray
   flow images, with OpenCV, torchvision.io and Pillow (1 thread), best of ``--repeats`` interleaved
   rounds;
2. the decode bound: samples per CPU-second if a sample cost only its JPEG decodes (T RGB + 2*T*L
   gray images);
3. the training loader, ``build_loader(build_dataset(...), train=True)`` (sampling, decode, multi-scale
   crop, flip, normalisation, collation): samples per CPU-second with 0 workers (everything in this
   process), and samples per wall-second with 0, 1 and 2 workers, best of ``--repeats``.

CPU-second rates do not depend on what else runs on the machine; wall-second rates (the worker
scaling) do, so on a shared machine they are lower bounds.

Usage::

    python benchmarks/loader.py                      # defaults: 340x256, T=8, L=5, crop 224
    python benchmarks/loader.py --workers 0 2 --batches 6 --json out.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def make_tree(root: Path, videos: int, length: int, width: int, height: int) -> None:
    """A prepared tree in the UCF101 key layout with smooth, moving content (compresses like video)."""
    import numpy as np
    from PIL import Image

    from stfn.fileio import atomic_write_json

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    classes = ["ApplyEyeMakeup", "Archery"]
    lines, entries = {"train": [], "test": []}, {}
    for v in range(videos):
        cls = classes[v % 2]
        name = f"v_{cls}_g{v // 2 + 8:02d}_c01"
        key = f"{cls}/{name}"
        folder = root / key
        folder.mkdir(parents=True, exist_ok=True)
        phase = torch.rand(3, generator=g) * 6.28
        for f in range(length):
            rgb = torch.stack([127 + 100 * torch.sin((xx + 3 * f) / (9 + 4 * c) + phase[c]) * torch.cos(yy / 17.0)
                               for c in range(3)])
            rgb = (rgb + torch.randn(rgb.shape, generator=g) * 6).clamp(0, 255).to(torch.uint8)
            Image.fromarray(rgb.permute(1, 2, 0).contiguous().numpy()).save(folder / f"img_{f + 1:05d}.jpg", quality=95)
            if f + 1 < length:
                for c, comp in enumerate("xy"):
                    fl = 128 + 30 * torch.sin((xx + yy * (c + 1) + 5 * f) / 23.0)
                    fl = (fl + torch.randn(fl.shape, generator=g) * 2).clamp(0, 255).to(torch.uint8)
                    Image.fromarray(np.asarray(fl)).save(folder / f"flow_{comp}_{f + 1:05d}.jpg", quality=95)
        entries[key] = {"source": key + ".avi", "status": "ok", "frames": length, "flows": length - 1,
                        "width": width, "height": height, "fps": 25.0, "error": None}
        lines["train"].append(f"{key}.avi {v % 2 + 1}")
    atomic_write_json(root / "manifest.json", {"version": 1, "flow": {"algorithm": "dis", "bound": 20.0},
                                               "resize": {"short_side": min(width, height)}, "videos": entries})
    splits = root / "splits"
    splits.mkdir(exist_ok=True)
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (splits / "trainlist01.txt").write_text("\n".join(lines["train"]) + "\n")
    (splits / "testlist01.txt").write_text("\n".join(line.split()[0] for line in lines["train"]) + "\n")


def decode_rate(root: Path, decoder: str, gray: bool, seconds: float) -> float:
    """Images per CPU-second of reading and decoding (decode_jpegs, one thread) the tree's images, batches of 8."""
    from stfn.data.datasets import decode_jpegs

    pattern = "flow_x_*.jpg" if gray else "img_*.jpg"
    paths = sorted(root.rglob(pattern))
    done, i = 0, 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        batch = [paths[(i + j) % len(paths)] for j in range(8)]
        decode_jpegs([p.read_bytes() for p in batch], gray, decoder, root)
        done, i = done + len(batch), i + 8
    return done / (time.process_time() - cpu)


def best_decode_rates(root: Path, decoders: list[str], seconds: float, repeats: int) -> dict:
    """Best of ``repeats`` short rounds, decoders interleaved (fair on a shared, noisy machine)."""
    best = {(d, g): 0.0 for d in decoders for g in (False, True)}
    for _ in range(repeats):
        for key in best:
            best[key] = max(best[key], decode_rate(root, key[0], key[1], seconds / repeats))
    return best


def loader_rate(root: Path, decoder: str, workers: int, args: argparse.Namespace) -> tuple[float, float]:
    """Training samples per wall-second and per CPU-second of this process, after a warm-up batch."""
    from stfn.config import DataConfig
    from stfn.data.datasets import build_dataset, build_loader

    cfg = DataConfig(dataset="ucf101", root=str(root), splits=str(root / "splits"), frames=args.frames,
                     scale_size=args.scale_size, crop_size=args.crop_size, jpeg_decoder=decoder)
    ds = build_dataset(cfg, "train", args.streams, args.flow_length)
    loader = build_loader(ds, args.batch_size, train=True, workers=workers, seed=0)
    it = iter(loader)
    next(it)
    samples, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(args.batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        samples += len(batch["label"])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    del it, loader
    return samples / wall, samples / cpu


def print_core_needs(results: dict, rates: list[float]) -> None:
    """How many loader cores a GPU consuming ``rates`` samples/s needs: with CPU decoding (the
    0-worker samples per CPU-second) and with ``data.jpeg_decoder: nvjpeg``, where the decode leaves
    the CPU: per sample, the loader's CPU time less the decode-bound time (an estimate: the nvJPEG
    call and the copy back cost some CPU too, and the GPU's decoder shares the device with training)."""
    rows = []
    for dec, loader in results["loader"].items():
        cpu0, bound = loader["0w_samples_cpu_s"], results["decode"][dec]["bound_samples_cpu_s"]
        rest = 1 / cpu0 - 1 / bound  # CPU-s per sample that is not JPEG decoding
        gpu = 1 / rest if rest > 0 else float("inf")
        results["loader"][dec]["without_decode_samples_cpu_s"] = gpu
        results["loader"][dec]["cores_for"] = {str(r): {"cpu_decode": r / cpu0, "nvjpeg": r / gpu} for r in rates}
        rows.append(f"| {dec} | {cpu0:.1f} | {gpu:.1f} | "
                    + " | ".join(f"{r / cpu0:.0f} / {r / gpu:.0f}" for r in rates) + " |")
    print("\nCores a GPU step rate needs (loader samples/s = cores x samples/CPU-s), CPU decode / nvjpeg:\n")
    print("| decoder | samples/CPU-s, CPU decode | samples/CPU-s, decode on the GPU (est.) | "
          + " | ".join(f"{r:g} samples/s" for r in rates) + " |")
    print("| --- " * (3 + len(rates)) + "|")
    print("\n".join(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--length", type=int, default=48, help="frames per video")
    parser.add_argument("--size", default="340x256", help="stored frame size WxH")
    parser.add_argument("--frames", type=int, default=8, help="T positions per sample")
    parser.add_argument("--flow-length", type=int, default=5)
    parser.add_argument("--streams", nargs="+", default=["rgb", "flow"])
    parser.add_argument("--scale-size", type=int, default=256)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per loader setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--decoders", nargs="+", default=["opencv", "torchvision", "pillow"])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per raw-decode measurement")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many rounds per measurement")
    parser.add_argument("--gpu-rates", type=float, nargs="+", default=[50, 100, 200, 400],
                        help="GPU training consumption rates (samples/s) to size the CPU side for")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--quick", action="store_true", help="tiny tree, one decoder, 0 workers: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.length, args.batches, args.seconds, args.repeats = 2, 12, 2, 0.3, 1
        args.workers, args.decoders = [0], ["opencv"]
    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.split("x"))
    per_sample = {"rgb": args.frames, "flow": 2 * args.frames * args.flow_length}
    results: dict = {"setting": {k: v for k, v in vars(args).items() if k != "json"}, "decode": {}, "loader": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_tree(root, args.videos, args.length, width, height)
        print(f"prepared tree: {args.videos} videos x {args.length} frames at {args.size} "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        print(f"\nT={args.frames} L={args.flow_length} streams={'+'.join(args.streams)} crop {args.crop_size}, "
              f"batch {args.batch_size}; torch {torch.__version__}, 1 thread per process\n")
        print("| decoder | RGB img/CPU-s | flow img/CPU-s | decode-bound samples/CPU-s | loader 0w samples/CPU-s | "
              + " | ".join(f"loader {w}w samples/s" for w in args.workers) + " |")
        print("| --- " * (5 + len(args.workers)) + "|")
        decode = best_decode_rates(root, args.decoders, args.seconds, args.repeats)
        for dec in args.decoders:
            rgb, gray = decode[(dec, False)], decode[(dec, True)]
            cost = sum(per_sample[s] / (rgb if s == "rgb" else gray) for s in args.streams)
            runs = {w: [loader_rate(root, dec, w, args) for _ in range(args.repeats)] for w in args.workers}
            wall = {w: max(r[0] for r in rs) for w, rs in runs.items()}
            cpu0 = max(r[1] for r in runs[0]) if 0 in runs else float("nan")
            results["decode"][dec] = {"rgb_img_cpu_s": rgb, "flow_img_cpu_s": gray, "bound_samples_cpu_s": 1 / cost}
            results["loader"][dec] = {"0w_samples_cpu_s": cpu0, **{f"{w}w_samples_s": r for w, r in wall.items()}}
            print(f"| {dec} | {rgb:.0f} | {gray:.0f} | {1 / cost:.1f} | {cpu0:.1f} | "
                  + " | ".join(f"{r:.1f}" for r in wall.values()) + " |", flush=True)
    print_core_needs(results, args.gpu_rates)
    if args.json:
        from stfn.fileio import atomic_write_json

        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
