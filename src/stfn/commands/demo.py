"""``stfn demo [--out DIR] [--preset tiny|small] [--seed N] [--end-to-end]``: the main job."""

from __future__ import annotations

import argparse

from stfn.commands import add_threads_and_progress, set_threads
from stfn.study.presets import PRESETS  # light: no torch import

HELP = ("Generate the synthetic benchmark, prepare it, train and compare TSN, Temporal-Inception, TS-LSTM, "
        "TLE and STFN, and write a report (no data or weights needed).")
RESUME = ""  # after an interruption, the same command resumes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo); re-running resumes")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS),
                        help="small: the full demo, about 6 min on 2 CPU cores (default); tiny: a smoke test")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data generator and of the training runs (the heads also train with "
                             "SEED+1, SEED+2: mean ± std)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="also fine-tune STFN end to end from the TSN backbones (small preset: 20 epochs, "
                             "about 2 more minutes on 2 CPU cores)")
    add_threads_and_progress(parser)


def run(args: argparse.Namespace) -> int:
    from stfn.study.demo import run_demo  # heavy imports inside run (see stfn.cli)
    from stfn.study.report import demo_table

    set_threads(args)
    summary = run_demo(args.out, preset=args.preset, seed=args.seed, end_to_end=args.end_to_end,
                       progress=not args.no_progress)
    print()
    print(demo_table(summary["models"]))
    return 0
