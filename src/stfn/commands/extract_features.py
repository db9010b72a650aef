"""``stfn extract-features CHECKPOINT_OR_CONFIG --out DIR [--subsets train test] [--frames T] [--data DIR]
[--splits DIR] [--split N] [--set k=v ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Cache per-frame backbone features (T, C) per video and stream, for fast head training."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="CHECKPOINT_OR_CONFIG",
                        help="a checkpoint (.pt: its trained backbones) or a YAML config (fresh/ImageNet backbones)")
    parser.add_argument("--out", required=True, help="features folder (features.json + <subset>_<stream>.npy)")
    parser.add_argument("--subsets", nargs="+", default=["train", "test"], choices=["train", "test"])
    parser.add_argument("--frames", type=int, help="positions cached per video (default: data.frames; TSN: 25)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="with a YAML config: override a config key (repeatable)")
    parser.add_argument("--data", metavar="DIR", help="prepared folder (sets data.root); with a checkpoint: where "
                                                      "its prepared folder is now")
    parser.add_argument("--splits", metavar="DIR", help="split folder (sets data.splits); with a checkpoint: where "
                                                        "its split folder is now (the lists it trained with)")
    parser.add_argument("--split", type=int, metavar="N", help="split number (sets data.split)")
    parser.add_argument("--batch-size", type=int, help="videos per batch (default: train.batch_size)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--compile", choices=["auto", "true", "false"],
                        help="torch.compile the backbones: auto (when the run is long enough to repay the compile time), true or false (default: train.compile of the checkpoint or config; `false` turns it off)")
    parser.add_argument("--backend", default="auto", choices=["auto", "eager", "compile", "openvino"],
                        help="runtime of the backbones: auto (default: openvino on a CPU with native bf16 when the run "
                             "repays its conversion and stfn[openvino] is installed, else as --compile says), eager, "
                             "compile or openvino; the choice is printed")


def run(args: argparse.Namespace) -> int:
    from stfn.config import load_config
    from stfn.engine.features import extract_features
    from stfn.errors import StfnError
    from stfn.runtime import resolve_device

    resolve_device(args.device)  # a bad one named as the flag (the library names its parameter)
    source = Path(args.source)
    data = {"data_root": args.data, "splits_dir": args.splits, "split": args.split}
    if source.suffix in (".yaml", ".yml"):
        src = load_config(source, args.overrides)
        src.data.root = args.data or src.data.root
        src.data.splits = args.splits or src.data.splits
        src.data.split = args.split or src.data.split
        data = {}
    else:
        if args.overrides:
            raise StfnError("--set only applies to a YAML config; a checkpoint extracts with its own settings "
                            "(--data, --splits and --split say where its data is now)")
        src = source
    out = extract_features(src, args.out, tuple(args.subsets), frames=args.frames, batch_size=args.batch_size,
                           device=args.device, progress=not args.no_progress, torch_compile=args.compile, backend=args.backend, **data)
    print(f"features written to {out} (train a head on them with --set data.features={out})")
    return 0
