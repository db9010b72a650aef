"""``stfn synth OUT_DIR [--preset tiny|small|full|stress] [--seed N] [--size PX] [--frames MIN-MAX] ...``."""

from __future__ import annotations

import argparse

HELP = "Generate the synthetic action benchmark (real H.264 videos + UCF101-format splits)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="output folder: videos/<Class>/*.mp4, splits/, classes.json, scenes.jsonl")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "full", "stress"],
                        help="tiny: tests, seconds; small: stfn demo (default); full: a serious benchmark; "
                             "stress: UCF101's shape (101 classes, 13130 videos of 320x240) for pipeline stress runs")
    parser.add_argument("--seed", type=int, default=0, help="all randomness derives from it (default 0)")
    parser.add_argument("--size", type=int, default=None,
                        help="frame side in pixels (square frames; the frame height of the stress preset)")
    parser.add_argument("--frames", default=None, metavar="MIN-MAX", help="frames per video, e.g. 32-48 or 40")
    parser.add_argument("--train", type=int, default=None, help="training videos per class")
    parser.add_argument("--test", type=int, default=None, help="test videos per class")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names (twins must come together); default: the preset's")
    parser.add_argument("--workers", type=int, default=1, help="processes that render and encode (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a folder generated with other settings")
    parser.add_argument("--contact-sheet", default=None, metavar="PNG",
                        help="also write a PNG with a few frames of one video per class")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _frames(text: str) -> tuple[int, int]:
    from stfn.data.synthetic.generate import SyntheticError  # see run

    try:
        lo, _, hi = text.partition("-")
        return int(lo), int(hi or lo)
    except ValueError:
        raise SyntheticError(f"--frames must look like MIN-MAX or N, got '{text}'") from None


def run(args: argparse.Namespace) -> int:
    # OpenCV, PyAV and Pillow load when the command runs: the CLI imports every command module
    from stfn.data.synthetic.generate import generate
    from stfn.data.synthetic.sheet import contact_sheet

    overrides: dict = {}
    if args.size is not None:
        overrides["size"] = args.size
    if args.frames is not None:
        overrides["frames_min"], overrides["frames_max"] = _frames(args.frames)
    if args.train is not None:
        overrides["train_per_class"] = args.train
    if args.test is not None:
        overrides["test_per_class"] = args.test
    if args.classes:
        overrides["classes"] = [c.strip() for c in args.classes.split(",") if c.strip()]
    info = generate(args.out_dir, args.preset, args.seed, workers=args.workers, progress=not args.no_progress,
                    overwrite=args.overwrite, **overrides)
    p = info.params
    n_train = sum(c["train"] for c in info.counts.values())
    n_test = sum(c["test"] for c in info.counts.values())
    status = f"wrote {info.generated} videos in {info.seconds:.1f} s" if info.generated else "already complete"
    print(f"synthetic benchmark '{info.preset}' (seed {info.seed}) in {info.root}: {status}")
    print(f"  {len(info.classes)} classes, {n_train} train + {n_test} test videos, {p.get('width', p['size'])}x{p['size']} px, "
          f"{p['frames_min']}-{p['frames_max']} frames at {p['fps']} fps")
    for group in dict.fromkeys(c.group for c in info.classes):
        print(f"  {group:18s} {', '.join(c.name for c in info.classes if c.group == group)}")
    print(f"  splits: {info.splits_dir} (UCF101 format; dataset 'synthetic', split 1)")
    print(f"  recommended flow bound for stfn prepare: {info.flow_bound:g} px/frame (classes.json: flow_bound)")
    if args.contact_sheet:
        path = contact_sheet(info.root, args.contact_sheet)
        print(f"  contact sheet: {path}")
    return 0
