"""``stfn eval CHECKPOINT [CHECKPOINT ...] [--split N [N ...]] [--data DIR] [--splits DIR] [--features DIR]
[--crops 1|3|10] [--frames T] [--fusion-weights W_RGB W_FLOW] [--json FILE] [--out DIR]``."""

from __future__ import annotations

import argparse
import json
import math

HELP = "Evaluate checkpoints: top-1/top-5/mean class accuracy, per-class CSV, confusion PNG, predictions."


MEAN_CLASS = ("mean class accuracy: the mean, over the classes that have test videos, of each class's top-1 "
              "accuracy; a class without test videos is left out (MMAction2 counts a class that is predicted "
              "but has no test video as 0: the same on the official splits, which test every class, lower on "
              "a subset)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = MEAN_CLASS
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="best.pt / last.pt; an RGB and a flow checkpoint of one split are also fused (TSN)")
    parser.add_argument("--split", type=int, nargs="+", metavar="N",
                        help="split to test on (default: the split each checkpoint was trained on); several: one "
                             "per checkpoint, in order (e.g. --split 1 2 3 with three checkpoints)")
    parser.add_argument("--data", metavar="DIR",
                        help="the prepared folder where it is now (default: data.root of the checkpoint)")
    parser.add_argument("--splits", nargs="+", metavar="DIR",
                        help="the split folder (one) where it is now (default: data.splits of the checkpoint); "
                             "the lists must be those the checkpoint trained with; split numbers are --split")
    parser.add_argument("--features", metavar="DIR",
                        help="a checkpoint trained on cached features: their folder where it is now")
    parser.add_argument("--crops", type=int, choices=[1, 3, 10], help="test views per frame (default: data.test_crops)")
    parser.add_argument("--frames", type=int, help="positions per video (default: data.frames of the checkpoint)")
    parser.add_argument("--fusion-weights", type=float, nargs="+", metavar="W",
                        help="rgb and flow score weights for two-stream fusion (default: model.fusion_weights, 1 1.5)")
    parser.add_argument("--fusion-rule", choices=["logits", "softmax"],
                        help="two-stream fusion of the class scores: logits = TSN's weighted sum of the streams' "
                             "logits, softmax = weighted mean of their softmax scores (default: model.fusion_rule, "
                             "logits)")
    parser.add_argument("--batch-size", type=int, help="test videos per batch (default: about one training batch of frames)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--out", help="folder for the result files (default: eval_* next to each checkpoint)")
    parser.add_argument("--json", help="also write the summary as JSON to this file ('-' prints JSON instead of text)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--compile", choices=["auto", "true", "false"],
                        help="torch.compile the backbones: auto (when the run is long enough to repay the compile time), true or false (default: train.compile of the checkpoint; `false` turns it off)")
    parser.add_argument("--backend", default="auto", choices=["auto", "eager", "compile", "openvino"],
                        help="runtime of the backbones: auto (default: openvino on a CPU with native bf16 when the run "
                             "repays its conversion and stfn[openvino] is installed, else as --compile says), eager, "
                             "compile or openvino; the choice is printed")


def _fmt(x: float | None) -> str:
    return "  -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:6.2f}"


def _row(name: str, split: object, r: dict) -> str:
    return f"{name:<44} {split!s:>5} {_fmt(r.get('top1'))} {_fmt(r.get('top5'))} {_fmt(r.get('mean_class_acc'))}"


def format_report(report: dict) -> str:
    """The text table ``stfn eval`` prints."""
    lines = [f"{'model':<44} {'split':>5} {'top1':>6} {'top5':>6} {'mean class':>10}"]
    for r in report["results"]:
        lines.append(_row(f"{r['checkpoint']} ({'+'.join(r['model_streams'])})", r["split"], r))
        for s, m in (r.get("streams") or {}).items():
            lines.append(_row(f"  {s} stream alone", r["split"], m))
        lines.append(f"  -> {r['out_dir']}")
    for f in report["fused"]:
        w = ":".join(f"{x:g}" for x in f["weights"])
        lines.append(_row(f"fused {'+'.join(f['streams'])} ({w}, {f.get('rule', 'logits')})", f["split"], f))
        lines.append(f"  -> {f['out_dir']}")
    if "mean" in report:
        lines.append(_row(f"mean over splits {', '.join(str(s) for s in report['mean']['splits'])}", "all",
                          report["mean"]))
    return "\n".join(lines)


def split_folder(values: list[str] | None) -> str | None:
    """``--splits DIR``; split numbers there (``--splits 1 2 3``, the old spelling) get one sentence
    naming ``--split``."""
    from pathlib import Path

    from stfn.errors import StfnError

    if not values:
        return None
    if all(v.strip().isdigit() for v in values) and not Path(values[0]).is_dir():
        raise StfnError(f"--splits is the split folder now; give split numbers with --split "
                        f"{' '.join(values)}")
    if len(values) != 1:
        raise StfnError(f"--splits takes one split folder, got {len(values)}: {' '.join(values)}")
    return values[0]


def split_numbers(split: list[int] | None, checkpoints: int) -> list[int] | None:
    """``--split N`` for every checkpoint, or one per checkpoint."""
    from stfn.errors import StfnError

    if not split:
        return None
    if len(split) == 1:
        return split * checkpoints
    if len(split) != checkpoints:
        raise StfnError(f"--split lists {len(split)} splits for {checkpoints} checkpoints: give one split for all, "
                        "or one per checkpoint in the same order")
    return list(split)


def run(args: argparse.Namespace) -> int:
    from stfn.engine import distributed
    from stfn.engine.evaluate import evaluate_many
    from stfn.fileio import atomic_write_json, check_writable
    from stfn.models.stfn import check_fusion_weights

    if args.fusion_weights is not None:
        check_fusion_weights(args.fusion_weights, what="--fusion-weights")
    splits = split_numbers(args.split, len(args.checkpoints))
    if args.json and args.json != "-":  # before the evaluation, which an unwritable --json would lose
        check_writable(args.json, "--json")
    if args.out:
        check_writable(args.out, "--out", folder=True)
    try:
        report = evaluate_many(args.checkpoints, splits=splits, views=args.crops, frames=args.frames,
                               data_root=args.data, splits_dir=split_folder(args.splits),
                               features_dir=args.features, out_dir=args.out, fusion_weights=args.fusion_weights,
                               fusion_rule=args.fusion_rule, batch_size=args.batch_size, device=args.device,
                               progress=not args.no_progress, torch_compile=args.compile, backend=args.backend)
        if distributed.get_info().is_main:
            if args.json == "-":
                print(json.dumps(report, indent=2))
            else:
                print(format_report(report))
                if args.json:
                    atomic_write_json(args.json, report)
    finally:
        distributed.cleanup()
    return 0
