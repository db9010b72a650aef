"""``stfn compare VIDEOS_OR_PREPARED --splits SPLITS_DIR [--split N] [--dataset ...] [--out runs/compare]
[--backbone NAME] [--preset tiny|quick|standard] [--seeds 3] [--models ...]``: the demo's comparison on
the user's data."""

from __future__ import annotations

import argparse

from stfn.commands import add_threads_and_progress, flag_names, set_threads
from stfn.data.splits import DATASETS, dataset_lines
from stfn.study.presets import COMPARE_PRESETS, HEADS, MODELS  # light: no torch import

HELP = ("Compare TSN, Temporal-Inception, TS-LSTM, TLE and STFN on your own videos and splits (prepare, "
        "train, paired tests, report), as `stfn demo` does on the synthetic benchmark.")


#: --dataset of compare: every dataset but MMAction2 lists (compare has no --train-list), so
#: ``--dataset list`` (or ``help``) prints the known names instead, one line each
COMPARE_DATASETS = [d for d in DATASETS if d != "list"]


class _Dataset(argparse.Action):
    """``--dataset NAME``; ``list`` / ``help`` print the dataset names and exit (as ``--help`` does, so
    neither VIDEOS nor --splits is needed)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values in ("list", "help"):
            print(dataset_lines(COMPARE_DATASETS))
            parser.exit(0)
        setattr(namespace, self.dest, values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="VIDEOS_OR_PREPARED",
                        help="a folder of videos (<Class>/<video>.avi, ...; prepared into OUT/prepared) or a "
                             "folder written by `stfn prepare`")
    parser.add_argument("--splits", required=True, metavar="DIR",
                        help="split folder (ucfTrainTestlist format, testTrainMulti_7030_splits, or the "
                             "train/<class>/ test/<class>/ tree for --dataset folder)")
    parser.add_argument("--split", type=int, default=1, metavar="N", help="split number (default 1)")
    parser.add_argument("--dataset", default="ucf101", choices=[*COMPARE_DATASETS, "list", "help"], action=_Dataset,
                        help="format of the split folder (default ucf101: classInd.txt, trainlist0N.txt, "
                             "testlist0N.txt); 'list' prints the known formats, one line each")
    parser.add_argument("--out", default="runs/compare", help="output folder (default runs/compare); re-running resumes")
    parser.add_argument("--preset", default="quick", choices=sorted(COMPARE_PRESETS),
                        help="quick: cnn_small at 64 px, for small data on a CPU (default); standard: ImageNet "
                             "resnet18 at 112 px (needs its weights: downloaded, or in the torch hub cache); "
                             "tiny: a smoke test")
    parser.add_argument("--backbone", help="replace the preset's backbone (torchvision name, timm:<name>, cnn_small)")
    parser.add_argument("--seeds", type=int, help="training seeds per head (default: the preset's, 3)")
    parser.add_argument("--models", nargs="+", choices=[MODELS[h] for h in HEADS], metavar="NAME",
                        help="heads to train (default all: " + ", ".join(MODELS[h] for h in HEADS) + "); the TSN "
                             "streams and their fusion always run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first training run (default 0)")
    add_threads_and_progress(parser)


def run(args: argparse.Namespace) -> int:
    from stfn.study.compare import run_compare  # heavy imports inside run (see stfn.cli)
    from stfn.study.compare_report import compare_table

    set_threads(args)
    with flag_names(seeds="--seeds", models="--models"):
        summary = run_compare(args.source, args.splits, args.out, split=args.split, dataset=args.dataset,
                              preset=args.preset, backbone=args.backbone, seeds=args.seeds, models=args.models,
                              seed=args.seed, progress=not args.no_progress)
    print()
    print(compare_table(summary["models"]))
    return 0
