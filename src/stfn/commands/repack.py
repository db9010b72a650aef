"""``stfn repack PREPARED OUT_DIR --format packed|rawframes``: a prepared folder stored the other way."""

from __future__ import annotations

import argparse

HELP = "store a prepared folder again as packed files (one per video) or as rawframes (one per image)"
RESUME = ""  # after an interruption, the same command goes on with the videos not done


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prepared", metavar="PREPARED", help="a folder written by `stfn prepare` (either format)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the new prepared folder (outside PREPARED)")
    p.add_argument("--format", dest="storage", required=True, choices=["packed", "rawframes"],
                   help="packed: <key>.stfnpack per video; rawframes: MMAction2's <key>/img_00001.jpg ...")
    p.add_argument("--workers", type=int, default=4, help="threads reading and writing (default: 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from stfn.commands import flag_names
    from stfn.data.prepare.convert import repack  # see stfn.cli: commands import their work when they run

    with flag_names(workers="--workers", storage="--format"):
        summary = repack(args.prepared, args.out_dir, args.storage, workers=args.workers, progress=not args.quiet)
    print(summary)
    return 1 if summary.failures else 0
