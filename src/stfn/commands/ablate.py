"""``stfn ablate --config FILE --grid key=v1,v2 [--grid ...] [--seeds N] [--jobs N] [--out DIR] [--features DIR]``."""

from __future__ import annotations

import argparse

from stfn.commands import flag_names, set_threads
from stfn.errors import StfnError

HELP = ("Run a grid of design choices (every combination, or one axis at a time) over several seeds and "
        "write one table with mean and spread; resumable.")
RESUME = ""  # after an interruption, the same command resumes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="base YAML config (configs/*.yaml)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a config key and the values to try, e.g. model.head.fusion=none,sum,gated or "
                             "model.head.kernel_sizes=[1,3],[1,3,5] (repeatable; values are YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the base config (repeatable)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per combination: train.seed, +1, ... (default 1)")
    parser.add_argument("--out", default="runs/ablate", help="output folder (default: runs/ablate); re-running resumes")
    parser.add_argument("--features", help="cached features (`stfn extract-features`, or the demo's OUT/features): "
                                           "heads train on them; backbone changes build their own")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="vary each --grid key alone around the base config instead of every combination")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many runs at a time, one process and one torch thread each (e.g. the "
                             "number of cores; a run's numbers are those of --threads 1); default 1: one run at "
                             "a time with --threads")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from stfn.study.ablate import ablation_markdown, run_ablation  # heavy: inside run (see stfn.cli)
    from stfn.study.grid import parse_grid

    if not args.grid:
        raise StfnError("give at least one --grid key=value1,value2")
    set_threads(args)
    axes = parse_grid(args.grid)
    with flag_names(seeds="--seeds", jobs="--jobs"):
        table = run_ablation(args.config, axes, args.out, seeds=args.seeds, features=args.features,
                             overrides=args.overrides, one_at_a_time=args.one_at_a_time, jobs=args.jobs,
                             progress=not args.no_progress)
    print()
    print(ablation_markdown(table))
    print(f"table written to {args.out}/ablation.md and ablation.json")
    return 0
