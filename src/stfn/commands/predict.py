"""``stfn predict CHECKPOINT VIDEO_OR_FOLDER... [--top-k K] [--json] [--frames T] [--crops V] [--flow ALGO]``."""

from __future__ import annotations

import argparse
import json
import sys

from stfn.commands import flag_names

HELP = "Classify videos with a trained checkpoint: top-k classes per video (flow computed on the fly)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint written by `stfn train` (best.pt / last.pt)")
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER",
                        help="video files; a folder stands for the videos below it")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per video (default 5)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (settings, per-video top-k and timings) instead of text")
    parser.add_argument("--frames", type=int, default=None, help="T positions per video (default: data.frames)")
    parser.add_argument("--crops", type=int, choices=[1, 3, 10], default=None,
                        help="test views: 1 centre, 3 along the long side, 10 TSN (default: data.test_crops)")
    parser.add_argument("--flow", default=None, metavar="ALGO",
                        help="flow algorithm, e.g. dis, dis:medium, tvl1, farneback, raft (default: as in training)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--amp", default="auto", choices=["auto", "none", "bf16", "fp16"],
                        help="autocast: auto = bf16 where the hardware does it natively, else fp32")
    parser.add_argument("--backend", default="auto", choices=["auto", "eager", "compile", "onnx", "openvino"],
                        help="network runtime: auto (default: openvino on a CPU with native bf16 when the videos repay "
                             "its 1.5-2 s conversion per backbone and stfn[openvino] is installed, else eager), eager "
                             "(no start-up cost), compile (torch.compile: slow first video, faster after), onnx (ONNX "
                             "Runtime on the CPU, fp32; needs stfn[onnx]), openvino (needs stfn[openvino])")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch and OpenCV (default 0: their defaults, all cores)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="print the settings and a decode / flow / network time breakdown per video")


def _text(result: dict, verbose: bool) -> str:
    lines = [f"{result['video']}:"]
    width = max(len(t["class"]) for t in result["top"])
    for rank, t in enumerate(result["top"], 1):
        lines.append(f"  {rank}. {t['class']:<{width}}  {t['prob']:.4f}")
    if verbose:
        tm = result["timings"]
        lines.append(
            f"  {result['frames']} frames; decode {tm['decode']:.3f} s, flow {tm['flow']:.3f} s, "
            f"transform {tm['transform']:.3f} s, network {tm['network']:.3f} s, total {tm['total']:.3f} s"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from stfn.errors import StfnError
    from stfn.predict import PREDICT_FLAGS, Predictor, check_options, expand_inputs

    if args.top_k < 1:
        raise StfnError(f"--top-k must be at least 1, got {args.top_k}")
    if args.threads < 0:
        raise StfnError(f"--threads must be 0 (default) or more, got {args.threads}")
    with flag_names(**PREDICT_FLAGS):
        check_options(args.device, args.amp, args.backend)  # before the checkpoint loads
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    videos = expand_inputs(args.inputs)
    with flag_names(**PREDICT_FLAGS):
        predictor = Predictor.from_checkpoint(args.checkpoint, flow=args.flow, frames=args.frames, crops=args.crops,
                                              device=args.device, amp=args.amp, backend=args.backend,
                                              videos=len(videos))
    settings = predictor.settings()
    if predictor.backend != "eager" and not args.verbose:
        print(f"stfn predict: network on {predictor.backend} (--backend {args.backend})", file=sys.stderr)
    if args.verbose and not args.json:
        print(f"checkpoint {args.checkpoint}: " + ", ".join(f"{k}={v}" for k, v in settings.items()), file=sys.stderr)
    results, failed = [], 0
    for result in predictor.predict_many(videos, top_k=args.top_k):
        if not result["ok"]:
            failed += 1
            print(f"stfn predict: error: {result['error']}", file=sys.stderr)
            results.append(result)
            continue
        if result.get("note"):
            print(f"stfn predict: warning: '{result['video']}': {result['note']}", file=sys.stderr)
        if not args.json:
            print(_text(result, args.verbose), flush=True)
        results.append(result)
    if args.json:
        doc = {"checkpoint": str(args.checkpoint), "settings": settings, "failed": failed, "results": results}
        print(json.dumps(doc, indent=2))
    return 1 if failed else 0
