"""Latency of ``stfn predict`` on a 10 s 320x240 clip, broken down into decode, flow and network.

Writes a 10 s, 25 fps, 320x240 MPEG-4 Part 2 AVI (the encoding UCF101 uses) by looping the frames of
``../shared/videos/test.avi`` (a synthetic moving pattern when that file is absent), builds random-weight
checkpoints of the ``tiny`` preset and of ``stfn_resnet18`` (224 px, T=16, L=5), and times
:meth:`stfn.predict.Predictor.predict` on the clip, the presets interleaved round by round. Reported per
preset: median seconds of each stage (decode + resize of the sampled frames, optical flow of the sampled
stacks + quantisation, crops + normalisation, network) and the total, plus, as the baseline measured in
the same run, the flow of the *whole* clip that a predictor without sparse sampling would compute.

Each preset runs on every ``--backends`` network runtime of :class:`~stfn.predict.Predictor` (``eager``,
``compile``: torch.compile with freezing, ``onnx``: ONNX Runtime, fp32, ``openvino``: the backbones on
OpenVINO in the autocast dtype), side by side in the same
rounds; ``start-up s`` is construction (ONNX export) plus the first prediction (compilation) less a
warm prediction: what one-shot use pays on top. For repeated use (``stfn serve``) the fastest warm
network time wins; one-shot ``stfn predict`` (``--backend auto``, one video) stays ``eager``.

Usage::

    python benchmarks/predict_latency.py                    # both presets, 1 crop, 5 rounds
    python benchmarks/predict_latency.py --crops 1 10 --rounds 3
    python benchmarks/predict_latency.py --presets resnet18 --backends eager onnx
    python benchmarks/predict_latency.py --quick            # 2 s clip, 1 round: a smoke test

Results: a markdown table on stdout and ``bench_results/predict_latency.json``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    SHARED,
    base_parser,
    interleaved,
    loadavg,
    machine_info,
    machine_line,
    md_table,
    setup_torch,
    stats,
    write_results,
)

SHARED_AVI = SHARED / "videos" / "test.avi"
PRESETS = {  # name -> (config file, overrides)
    "tiny": ("configs/tiny.yaml", ["model.num_classes=101"]),
    "resnet18": ("configs/stfn_resnet18.yaml", ["model.pretrained=false", "model.num_classes=101"]),
}
STAGES = ("decode", "flow", "transform", "network", "total")


def make_clip(path: Path, seconds: float, fps: int = 25, size: tuple[int, int] = (320, 240)) -> str:
    """Write an MPEG-4 (XviD-like) AVI of ``seconds`` at ``fps``; returns where its frames came from."""
    import av

    from stfn.data.video.decode import read_video

    w, h = size
    if SHARED_AVI.is_file():
        source = read_video(SHARED_AVI, size=size)
        origin = f"{SHARED_AVI.name} looped"
    else:  # a textured square moving over a gradient
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.uint8)
        source = []
        for i in range(100):
            f = base.copy()
            x, y = 20 + 2 * i % (w - 60), 40 + i % (h - 80)
            f[y : y + 40, x : x + 40] = np.random.default_rng(i % 3).integers(0, 255, (40, 40, 3))
            source.append(f)
        source = np.stack(source)
        origin = "synthetic"
    n = int(round(seconds * fps))
    with av.open(str(path), "w", format="avi") as c:
        stream = c.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate = 1_500_000
        for i in range(n):
            k = i % (2 * len(source) - 2) if len(source) > 1 else 0
            k = k if k < len(source) else 2 * len(source) - 2 - k  # ping-pong: no jump at the loop point
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(source[k]), format="rgb24")
            c.mux(stream.encode(frame))
        c.mux(stream.encode())
    return origin


def make_checkpoint(preset: str, out: Path) -> Path:
    """A random-weight checkpoint of ``preset`` in the documented format."""
    import torch

    from stfn.config import config_to_dict, load_config
    from stfn.models import build_model

    config, overrides = PRESETS[preset]
    cfg = load_config(REPO / config, overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    classes = [f"class_{i:03d}" for i in range(cfg.model.num_classes)]
    path = out / f"{preset}.pt"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "classes": classes}, path)
    return path


def full_flow_seconds(predictor, clip: Path, rounds: int) -> float:
    """Median seconds to compute the flow of every frame pair of ``clip`` (the non-sparse baseline)."""
    from stfn.data.video.decode import probe, read_video, resize_shape

    info = probe(clip)
    p = predictor.reader.prepare
    frames = read_video(clip, size=resize_shape(info.width, info.height, p.short_side, p.size))
    times = interleaved({"full": lambda: predictor.reader.flow_estimator()(frames)}, rounds, warmup=0)
    return stats(times["full"])["median"]


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--crops", nargs="+", type=int, default=[1], choices=[1, 3, 10])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (medians reported)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--amp", default="auto", choices=["auto", "none", "bf16", "fp16"])
    parser.add_argument("--backends", nargs="+", default=["eager", "compile", "onnx", "openvino"],
                        choices=["eager", "compile", "onnx", "openvino"], help="Predictor network runtimes to compare")
    args = parser.parse_args()
    if args.quick:  # no compilation in the smoke test; ONNX only where onnxruntime is installed
        import importlib.util

        args.rounds, args.seconds = 1, 2.0
        args.presets = [p for p in args.presets if p == "tiny"] or args.presets[:1]
        args.backends = [b for b in args.backends if b == "eager" or (b == "onnx" and importlib.util.find_spec(
            "onnxruntime")) or (b == "openvino" and importlib.util.find_spec("openvino"))]
    threads = setup_torch(args.threads)
    if args.threads:
        import cv2

        cv2.setNumThreads(args.threads)  # DIS flow runs on OpenCV's thread pool
    load_before = loadavg()

    from stfn.predict import Predictor

    with tempfile.TemporaryDirectory(prefix="stfn-bench-predict-") as tmp:
        tmp_path = Path(tmp)
        clip = tmp_path / "clip.avi"
        origin = make_clip(clip, args.seconds)
        predictors, results, built = {}, {}, {}
        for preset in args.presets:
            ckpt = make_checkpoint(preset, tmp_path)
            for crops in args.crops:
                for backend in args.backends:
                    name = f"{preset}, {crops} crop{'s' if crops > 1 else ''}, {backend}"
                    start = time.perf_counter()
                    predictors[name] = Predictor.from_checkpoint(ckpt, crops=crops, device=args.device, amp=args.amp,
                                                                 backend=backend)
                    built[name] = time.perf_counter() - start
        runs: dict[str, list[dict]] = {name: [] for name in predictors}
        fns = {name: (lambda n=name, p=pr: runs[n].append(p.predict(clip)["timings"])) for name, pr in predictors.items()}
        interleaved(fns, args.rounds, warmup=1)
        for name, pr in predictors.items():
            timed = runs[name][1:]  # the first call was the warm-up
            med = {s: stats([t[s] for t in timed])["median"] for s in STAGES}
            full = full_flow_seconds(pr, clip, max(1, min(args.rounds, 3))) if "flow" in pr.streams else None
            startup = built[name] + runs[name][0]["total"] - med["total"]
            results[name] = {"settings": pr.settings(), "median_seconds": med, "rounds": timed,
                             "construct_seconds": built[name], "first_call": runs[name][0], "startup_seconds": startup,
                             "full_video_flow_seconds": full,
                             "sparse_flow_speedup": (full / med["flow"]) if full and med["flow"] > 0 else None}
        for name, r in results.items():  # network time against eager's, same preset and crops
            eager = results.get(name.rsplit(", ", 1)[0] + ", eager")
            r["network_vs_eager"] = (eager["median_seconds"]["network"] / r["median_seconds"]["network"]
                                     if eager and r["median_seconds"]["network"] > 0 else None)

    rows = []
    for name, r in results.items():
        s, m = r["settings"], r["median_seconds"]
        full = r["full_video_flow_seconds"]
        rows.append([name, s["frames"], s["flow_length"], s["crop_size"], s["device"], s["amp"],
                     *(f"{m[k] * 1000:.0f}" for k in STAGES),
                     f"{r['network_vs_eager']:.2f}x" if r["network_vs_eager"] else "-",
                     f"{r['startup_seconds']:.1f}",
                     f"{full * 1000:.0f}" if full else "-",
                     f"{r['sparse_flow_speedup']:.1f}x" if r["sparse_flow_speedup"] else "-"])
    headers = ["model, crops, backend", "T", "L", "size", "device", "amp", "decode ms", "flow ms", "transform ms",
               "network ms", "total ms", "network vs eager", "start-up s", "whole-clip flow ms", "sparse flow gain"]
    print(f"stfn predict latency, {args.seconds:g} s 320x240 25 fps MPEG-4 AVI ({origin}), median of "
          f"{args.rounds} rounds, {threads} torch threads")
    print(md_table(headers, rows))
    print(machine_line(machine_info()))
    path = write_results("predict_latency", {"clip": {"seconds": args.seconds, "fps": 25, "size": [320, 240],
                                                      "codec": "mpeg4 (avi)", "frames_from": origin},
                                             "threads": threads, "rounds": args.rounds, "results": results},
                         args.out, load_before)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
