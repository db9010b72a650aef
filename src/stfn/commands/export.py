"""``stfn export CHECKPOINT --format onnx|torchscript --out FILE [--frames T] [--size S]``."""

from __future__ import annotations

import argparse
import sys

TOLERANCE = 1e-3  # largest acceptable |logits difference| of the exported file vs PyTorch (fp32)
HELP = "Export a trained network to ONNX or TorchScript (fixed frames and size, dynamic batch)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint written by `stfn train` (best.pt / last.pt)")
    parser.add_argument("--format", dest="fmt", choices=["onnx", "torchscript"], default="onnx",
                        help="onnx (opset 17, runs in onnxruntime) or torchscript (torch.jit.load)")
    parser.add_argument("--out", required=True, help="output file, e.g. model.onnx or model.pt")
    parser.add_argument("--frames", type=int, default=None, help="T, frames per video (default: data.frames)")
    parser.add_argument("--size", type=int, default=None, help="crop side in pixels (default: data.crop_size)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the exported file against PyTorch on a random batch")


def run(args: argparse.Namespace) -> int:
    import torch

    from stfn.export import export_checkpoint

    with torch.no_grad():  # not set_grad_enabled(False): it would outlive this command in the process
        info = export_checkpoint(args.checkpoint, args.out, fmt=args.fmt, frames=args.frames, size=args.size,
                                 check=not args.no_check)

    def shape(dims: list[int]) -> str:
        return "(" + ", ".join("B" if d < 0 else str(d) for d in dims) + ")"

    inputs = ", ".join(f"{name} {shape(dims)}" for name, dims in info["inputs"].items())
    print(f"wrote {info['path']} ({info['format']}): inputs {inputs} -> logits (B, {info['num_classes']})")
    diff = info["max_abs_diff"]
    if diff is not None:
        print(f"checked against PyTorch on a batch of 2: max |logits difference| = {diff:.2e}")
        if diff > TOLERANCE:
            print(f"stfn export: error: the exported file's logits differ from PyTorch's by {diff:.2e} "
                  f"(more than {TOLERANCE:g}); do not use '{info['path']}'", file=sys.stderr)
            return 1
    return 0
