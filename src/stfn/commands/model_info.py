"""``stfn model-info [--config FILE] [--set k=v ...] [--frames T] [--size S] [--json]``."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "Parameter counts per part, FLOPs per video and output shape of a network (default: the default STFN)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config (default: the built-in defaults, STFN resnet18)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set model.head.blocks=3 (repeatable)")
    parser.add_argument("--frames", type=int, default=None, help="T, frames per video (default: data.frames)")
    parser.add_argument("--size", type=int, default=None, help="input side in pixels (default: data.crop_size)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def format_summary(info: dict[str, Any]) -> str:
    """The summary of :func:`stfn.models.info.model_summary` as a small text table."""
    lines = [
        f"{info['arch']}: backbone {info['backbone']}, streams {'+'.join(info['streams'])}, "
        f"{info['num_classes']} classes, frame features {info['feature_dim']}-d",
        "input: " + ", ".join(f"{k} {tuple(v)}" for k, v in info["input"].items()),
        f"{'part':<16}{'params':>14}{'trainable':>14}{'FLOPs/video':>14}",
    ]
    for name, p in info["parts"].items():
        lines.append(f"{name:<16}{p['params']:>14,}{p['trainable_params']:>14,}{_human(p['flops']):>14}")
    lines.append(f"{'total':<16}{info['params']:>14,}{info['trainable_params']:>14,}{_human(info['flops']):>14}")
    lines.append(f"output: logits {tuple(info['output_shape'])}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from stfn.config import ConfigError, load_config
    from stfn.models.info import model_summary

    cfg = load_config(args.config, args.overrides)
    frames = args.frames if args.frames is not None else cfg.data.frames
    size = args.size if args.size is not None else cfg.data.crop_size
    if frames < 1 or size < 1:
        raise ConfigError(f"--frames and --size must be >= 1, got {frames} and {size}")
    info = model_summary(cfg.model, frames=frames, size=size)
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return 0
