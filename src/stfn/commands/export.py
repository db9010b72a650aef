"""``stfn export CHECKPOINT --format onnx|torchscript --out FILE [--frames T] [--size S]`` and
``stfn export CHECKPOINT --format hub --out DIR [--repo ORG/NAME]`` (a Hugging Face Hub folder)."""

from __future__ import annotations

import argparse
import sys

TOLERANCE = 1e-3  # largest acceptable |logits difference| of the exported file vs PyTorch (fp32)
HELP = ("Export a trained network to ONNX or TorchScript (fixed frames and size, dynamic batch), or as a "
        "Hugging Face Hub folder (model.safetensors, config.json, model card) to share it.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint written by `stfn train` (best.pt / last.pt), a Hub folder or "
                        "a Hub repo id ORG/NAME")
    parser.add_argument("--format", dest="fmt", choices=["onnx", "torchscript", "hub"], default="onnx",
                        help="onnx (opset 17, runs in onnxruntime), torchscript (torch.jit.load) or hub (a folder "
                             "to upload to the Hugging Face Hub: model.safetensors, config.json, README.md card)")
    parser.add_argument("--out", required=True, help="output file, e.g. model.onnx or model.pt; a folder for hub")
    parser.add_argument("--repo", default="ORG/NAME", help="hub: the repo id the model card's examples name "
                        "(where you will upload it; default ORG/NAME)")
    parser.add_argument("--frames", type=int, default=None, help="T, frames per video (default: data.frames)")
    parser.add_argument("--size", type=int, default=None, help="crop side in pixels (default: data.crop_size)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the exported file against PyTorch on a random batch")


def run(args: argparse.Namespace) -> int:
    if args.fmt == "hub":
        return _export_hub(args)
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


def _export_hub(args: argparse.Namespace) -> int:
    from stfn.errors import StfnError
    from stfn.sharing import save_pretrained

    if args.frames is not None or args.size is not None:
        raise StfnError("--frames and --size fix an ONNX or TorchScript graph; a hub folder keeps the model whole "
                        "(leave them out)")
    out = save_pretrained(args.checkpoint, args.out, repo=args.repo)
    print(f"wrote {out}/: model.safetensors, config.json, README.md; share it with `hf upload {args.repo} {out}`, "
          f"then anyone can run `stfn predict {args.repo} video.mp4`")
    return 0
