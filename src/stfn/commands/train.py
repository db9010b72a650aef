"""``stfn train --config FILE [--set k=v ...] [--out RUN_DIR] [--resume] [--data DIR] [--splits DIR] [--split N]``.

Also under ``torchrun --nproc_per_node N -m stfn train ...`` (distributed data parallel).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Train a network (single stream, two-stream STFN, two-stage, or a head on cached features)."
RESUME = "--resume"  # after an interruption, the same command with this flag resumes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML preset (configs/*.yaml); optional with --resume (the run's config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.lr=0.001 (repeatable)")
    parser.add_argument("--out", help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--data", help="prepared folder written by `stfn prepare` (sets data.root)")
    parser.add_argument("--splits", help="folder with the split files (sets data.splits)")
    parser.add_argument("--split", type=int, help="split number (sets data.split)")
    parser.add_argument("--features", help="folder written by `stfn extract-features` (sets data.features)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch)")
    parser.add_argument("--no-compile", action="store_true",
                        help="never torch.compile (sets train.compile=false; default auto: only runs long enough "
                             "to repay the compile time)")


def load_run_config(args: argparse.Namespace):
    """The config of a ``stfn train`` call: the YAML (or the run's own config.yaml when resuming),
    ``--set`` overrides, then the path shortcuts."""
    from stfn.config import load_config
    from stfn.errors import StfnError

    path = args.config
    if path is None:
        saved = Path(args.out) / "config.yaml" if args.out else None
        if not (args.resume and saved is not None and saved.is_file()):
            raise StfnError("--config is required (or --resume with --out pointing at a run folder)")
        path = saved
    cfg = load_config(path, args.overrides)
    if args.data is not None:
        cfg.data.root = args.data
    if args.splits is not None:
        cfg.data.splits = args.splits
    if args.split is not None:
        cfg.data.split = args.split
    if args.features is not None:
        cfg.data.features = args.features
    if getattr(args, "no_compile", False):
        cfg.train.compile = False
    dataset_defaults(cfg, path, args.overrides)
    return cfg


def _given(path, overrides: list[str], key: str) -> bool:
    """Whether the YAML at ``path`` or an override sets ``data.<key>``."""
    import yaml

    if any(o.split("=", 1)[0].strip() == f"data.{key}" for o in overrides):
        return True
    loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}  # load_config read it already
    return isinstance(loaded.get("data"), dict) and key in loaded["data"]


def dataset_defaults(cfg, path, overrides: list[str]) -> None:
    """What the datasets need: Kinetics leaves out the clips gone from YouTube (``data.on_missing=skip``
    unless the config or ``--set`` says otherwise; the count is printed when the lists are read), and
    SSv2 trains without horizontal flips (``data.hflip=false``, as TSM does: a mirror changes its
    left/right classes), said in one line."""
    from stfn.data.kinetics import KINETICS
    from stfn.data.ssv2 import NO_FLIP_DATASETS

    if cfg.data.dataset in KINETICS and not _given(path, overrides, "on_missing"):
        cfg.data.on_missing = "skip"
    if cfg.data.dataset in NO_FLIP_DATASETS and cfg.data.hflip:
        cfg.data.hflip = False
        print(f"stfn train: data.hflip=false for {cfg.data.dataset}: a mirror changes the meaning of its "
              "left/right classes, so it trains without flips, as TSM does")


def run(args: argparse.Namespace) -> int:
    from stfn.engine import distributed
    from stfn.engine.train import train

    cfg = load_run_config(args)
    out = args.out or str(Path("runs") / cfg.name)
    try:
        result = train(cfg, out, resume=args.resume, progress=not args.no_progress)
        if distributed.get_info().is_main:
            best = result.best
            line = f"run folder {result.out_dir}: best checkpoint {result.checkpoint}"
            if best:
                line += f" (val top1 {best['top1']:.2f}, mean class {best['mean_class_acc']:.2f})"
            print(line)
    finally:
        distributed.cleanup()
    return 0
