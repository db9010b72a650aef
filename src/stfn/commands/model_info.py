"""``stfn model-info [CHECKPOINT] [--config FILE] [--set k=v ...] [--frames T] [--size S] [--json]``."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = ("Parameter counts per part, FLOPs per video and output shape of a network (default: the default STFN); "
        "for a checkpoint also where it came from, what it was trained on and its recorded accuracy.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", default=None,
                        help="a checkpoint (.pt), a Hub folder or a Hub repo id ORG/NAME: its network and model card")
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


def format_card(card: dict[str, Any]) -> str:
    """Where a checkpoint came from and what it was trained on (:func:`stfn.sharing.model_card`)."""
    source = card["source"]
    where = {"hub": f"Hugging Face Hub {source.get('repo')}" if source.get("repo") else f"Hub folder {source.get('path')}",
             "mmaction2": f"converted from the MMAction2 checkpoint {source.get('path')}"}.get(source.get("format"),
                                                                                            "an stfn checkpoint")
    acc = ", ".join(f"{k} {v:.1f}" for k, v in (card["accuracy"] or {}).items()) or "not recorded"
    return "\n".join([f"came from: {where}", f"trained on: {card['dataset']}, split {card['split']} "
                      f"({card['train_videos']} videos, {card['epoch']} epochs)", f"accuracy at training time: {acc}",
                      f"trained with: {card['command'] or 'not recorded'}",
                      f"classes: {card['num_classes']} ({', '.join(card['classes'][:8])}"
                      f"{', ...' if len(card['classes']) > 8 else ''})"])


def run(args: argparse.Namespace) -> int:
    from stfn.config import ConfigError, load_config
    from stfn.models.info import model_summary

    if args.checkpoint is not None:
        return _checkpoint_info(args)
    cfg = load_config(args.config, args.overrides)
    frames = args.frames if args.frames is not None else cfg.data.frames
    size = args.size if args.size is not None else cfg.data.crop_size
    if frames < 1 or size < 1:
        raise ConfigError(f"--frames and --size must be >= 1, got {frames} and {size}")
    info = model_summary(cfg.model, frames=frames, size=size)
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return 0


def _checkpoint_info(args: argparse.Namespace) -> int:
    from stfn.config import ConfigError
    from stfn.engine.checkpoint import checkpoint_config, load_checkpoint
    from stfn.models.info import model_summary
    from stfn.sharing import model_card

    if args.config or args.overrides:
        raise ConfigError("--config and --set describe a network to build; a CHECKPOINT describes its own (give one)")
    ckpt = load_checkpoint(args.checkpoint)
    cfg = checkpoint_config(ckpt, args.checkpoint)
    frames = args.frames if args.frames is not None else cfg.data.frames
    size = args.size if args.size is not None else cfg.data.crop_size
    if frames < 1 or size < 1:
        raise ConfigError(f"--frames and --size must be >= 1, got {frames} and {size}")
    cfg.model.pretrained = False
    info, card = model_summary(cfg.model, frames=frames, size=size), model_card(cfg, ckpt)
    print(json.dumps({**info, "card": card}, indent=2) if args.json else format_summary(info) + "\n" + format_card(card))
    return 0
