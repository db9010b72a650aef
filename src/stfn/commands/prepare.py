"""``stfn prepare VIDEO_ROOT OUT_DIR [--format rawframes|packed]``: frames + optical flow + manifest."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from stfn.commands import flag_names
from stfn.data.clip_lists import annotation_kind, listed_videos
from stfn.data.prepare.manifest import VIDEO_EXTENSIONS
from stfn.data.prepare.run import prepare_dataset
from stfn.data.video.flow import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    DEFAULT_BOUND,
    DEFAULT_DIS_PRESET,
    DIS_PRESETS,
    FLOW_OPTIONS,
)

HELP = "decode videos into JPEG frames and optical flow (parallel, resumable) with a manifest"
RESUME = ""  # after an interruption, the same command resumes

FLOWS = (*ALGORITHMS, "none")
RAFT = FLOW_OPTIONS["raft"]


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}' must look like WxH, e.g. 340x256") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size '{text}' must be positive")
    return w, h


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be a positive integer")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video_root", metavar="VIDEO_ROOT", help="folder of videos (searched recursively) or one video file")
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="output folder: <key>/img_00001.jpg, flow_x_00001.jpg, ... (or <key>.stfnpack: --format)")
    p.add_argument("--format", dest="storage", choices=["rawframes", "packed"], default="rawframes",
                   help="rawframes (default): MMAction2's one JPEG file per frame and flow field; packed: one "
                        "<key>.stfnpack file per video (the same JPEGs and an index; for large sets)")
    p.add_argument("--flow", choices=FLOWS, default=DEFAULT_ALGORITHM,
                   help=f"optical flow algorithm (default: {DEFAULT_ALGORITHM})")
    p.add_argument("--dis-preset", choices=DIS_PRESETS, default=None,
                   help=f"DIS preset (default: stfn.data.video.flow.DEFAULT_DIS_PRESET, {DEFAULT_DIS_PRESET})")
    p.add_argument("--bound", type=float, default=DEFAULT_BOUND,
                   help=f"clip flow to +/- this many pixels (default: {DEFAULT_BOUND:g})")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: the usable CPU cores; 0 runs in this process)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--short-side", type=_positive, default=None, help="resize so the short side is S (aspect kept)")
    g.add_argument("--size", type=_size, default=None, help="resize to WxH, e.g. 340x256 (TSN)")
    p.add_argument("--shard", default=None,
                   help="I/N: prepare videos I, I+N, I+2N, ... (0-based); 'auto' reads Slurm array or torchrun env")
    p.add_argument("--list", dest="list_file", default=None,
                   help="prepare only the videos listed in FILE (first column, relative to VIDEO_ROOT), or in a "
                        "Kinetics CSV / SSv2 JSON file (found by name in any folder; missing ones are counted)")
    p.add_argument("--ext", default=None, help="comma-separated video extensions (default: avi,mp4,mkv,webm,mov,...)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality of frames and flow (default: 95)")
    p.add_argument("--retry-failed", action="store_true", help="retry videos an earlier run recorded as failed")
    p.add_argument("--raft-model", choices=RAFT["model"].choices, default=RAFT["model"].default,
                   help="--flow raft: model size")
    p.add_argument("--raft-weights", default=RAFT["weights"].default,
                   help="--flow raft: 'default' (pretrained, torchvision weights API), a state-dict file, or 'random'")
    p.add_argument("--raft-iters", type=_positive, default=RAFT["iters"].default,
                   help=f"--flow raft: refinement iterations (default: {RAFT['iters'].default})")
    p.add_argument("--batch-size", type=_positive, default=RAFT["batch_size"].default,
                   help="--flow raft: frame pairs per forward pass")
    p.add_argument("--device", default=RAFT["device"].default,
                   help="--flow raft: auto (GPU per worker / LOCAL_RANK when there is one), cpu, cuda, cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def annotation_list(video_root: str, list_file: str, exts: tuple[str, ...], folder: str) -> str:
    """``--list`` of a Kinetics CSV or SSv2 JSON: a plain list file (in ``folder``) of the listed videos that
    are under ``video_root``; how many are missing is printed (Kinetics always misses a few)."""
    from stfn.errors import StfnError

    found, missing = listed_videos(video_root, list_file, exts)
    total = len(found) + len(missing)
    if not found:
        raise StfnError(f"none of the {total} videos listed in '{list_file}' are under '{video_root}'"
                        + (f" (e.g. '{missing[0]}')" if missing else ""))
    if missing:
        print(f"stfn prepare: {len(missing)} of the {total} videos listed in '{list_file}' are not under "
              f"'{video_root}' (first: {', '.join(missing[:3])}); preparing the other {len(found)}")
    path = Path(folder) / "videos.txt"
    path.write_text("".join(f"{rel}\n" for rel in found), encoding="utf-8")
    return str(path)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="stfn-prepare-list-") as folder:
        return _run(args, folder)


def _run(args: argparse.Namespace, folder: str) -> int:
    opts: dict = {}
    if args.flow == "dis" and args.dis_preset:
        opts["preset"] = args.dis_preset
    elif args.flow == "raft":
        opts = {"model": args.raft_model, "weights": args.raft_weights, "iters": args.raft_iters,
                "batch_size": args.batch_size, "device": args.device}
    exts = tuple(e.strip() for e in args.ext.split(",") if e.strip()) if args.ext else VIDEO_EXTENSIONS
    if args.list_file and annotation_kind(args.list_file):
        args.list_file = annotation_list(args.video_root, args.list_file, exts, folder)
    with flag_names(workers="--workers", jpeg_quality="--jpeg-quality"):
        summary = prepare_dataset(
            args.video_root,
            args.out_dir,
            flow=args.flow,
            flow_opts=opts,
            bound=args.bound,
            workers=args.workers,
            short_side=args.short_side,
            size=args.size,
            shard=args.shard,
            list_file=args.list_file,
            extensions=exts,
            jpeg_quality=args.jpeg_quality,
            retry_failed=args.retry_failed,
            progress=not args.quiet,
            storage=args.storage,
        )
    print(summary)
    return 1 if summary.failed else 0
