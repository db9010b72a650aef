"""Optical flow for `stfn prepare`: speed and accuracy per algorithm, and prepare's worker scaling.

Two tables, all measured in the same run:

1. **Flow**: frame pairs per second at 320x240 (UCF101's size) on one thread, as a prepare worker runs
   it (pairs from the real ``../shared/videos/test.avi``; algorithms timed round-robin, medians), in
   wall-clock and in CPU time (what an idle core would give), and the mean end-point error (pixels) on
   synthetic pairs with exact ground truth: a textured image shifted, rotated and zoomed
   (:func:`flow_truth.synthetic_pair`), at normal strength (up to ~8 px) and 3x (up to ~25 px,
   "large"). RAFT runs with random weights unless pretrained ones are in the torch hub cache: its speed
   is real, its EPE is then n/a.
2. **Prepare**: ``prepare_dataset`` end to end (decode + flow + 3 JPEG writes per frame) on generated
   320x240 MPEG-4 AVIs (UCF101's format): CPU milliseconds per frame (``workers=0``, in this process,
   so no pool start-up), wall-clock frames/s with 1 and 2 workers (runs alternated), the total CPU
   seconds of a 2-worker run over a 1-worker run (1.0: parallelism adds no work, so 2 idle cores give
   2x), and the time UCF101 (2.5 M frames) takes on 2 cores projected from the CPU cost.

Usage::

    python benchmarks/flow.py                 # ~5 minutes on 2 idle cores
    python benchmarks/flow.py --quick         # smoke test
    python benchmarks/flow.py --skip-raft --videos 16

Results: printed tables and ``bench_results/flow.json``. On a machine shared with other jobs the
wall-clock figures are lower bounds; read the ratios (same run, interleaved) and the CPU-time columns.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import common
import flow_truth as truth
import numpy as np

from stfn.data.prepare.run import prepare_dataset
from stfn.data.video import flow as F
from stfn.data.video.decode import read_video
from stfn.errors import StfnError

UCF101_FRAMES = 2.5e6
SHARED = common.SHARED / "videos"
ALGOS: dict[str, tuple[str, dict[str, Any]]] = {
    "dis-ultrafast": ("dis", {"preset": "ultrafast"}),
    "dis-fast": ("dis", {"preset": "fast"}),
    "dis-medium": ("dis", {"preset": "medium"}),
    "farneback": ("farneback", {}),
    "tvl1": ("tvl1", {}),
    "raft-small": ("raft", {"model": "small", "iters": 12, "batch_size": 1, "device": "cpu"}),
    "raft-large": ("raft", {"model": "large", "iters": 12, "batch_size": 1, "device": "cpu"}),
}
SLOW = {"tvl1", "raft-small", "raft-large"}  # about 1 pair/s or less on one core


def _frames(n: int, quick: bool) -> np.ndarray:
    path = SHARED / "test.avi"
    if path.is_file():
        frames = read_video(path, backend="pyav")[: n + 1]
    else:  # no shared folder: synthetic motion
        frames = np.concatenate([truth.synthetic_pair("shift", seed=s)[0] for s in range(n // 2 + 1)])[: n + 1]
    return frames[:, :120, :160].copy() if quick else frames


def _estimators(skip_raft: bool) -> dict[str, tuple[Any, bool]]:
    """name -> (estimator, accuracy meaningful)."""
    out: dict[str, tuple[Any, bool]] = {}
    for name, (algo, opts) in ALGOS.items():
        if algo == "raft":
            if skip_raft:
                continue
            try:
                out[name] = (F.create_estimator(algo, **opts), True)
            except StfnError:  # offline: no pretrained weights; random ones give the real speed
                out[name] = (F.create_estimator(algo, **{**opts, "weights": "random"}), False)
        else:
            out[name] = (F.create_estimator(algo, **opts), True)
    return out


def _fmt(v: float | None) -> str:
    return f"{v:.3f}" if v is not None else "n/a"


def _round_robin(fns: dict[str, Any], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds per call of each function, timed round-robin (one warm-up call each)."""
    for f in fns.values():
        f()
    out = {n: {"wall": [], "cpu": []} for n in fns}
    for r in range(rounds):
        for n in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            w, c = time.perf_counter(), time.process_time()
            fns[n]()
            out[n]["wall"].append(time.perf_counter() - w)
            out[n]["cpu"].append(time.process_time() - c)
    return out


def bench_flow(args) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    size = (160, 120) if args.quick else (320, 240)
    frames = _frames(args.pairs, args.quick)
    ests = _estimators(args.skip_raft)
    pairs = {n: args.slow_pairs if n in SLOW else args.pairs for n in ests}
    fns = {n: (lambda e=e, k=pairs[n]: e(frames[: k + 1])) for n, (e, _) in ests.items()}
    with common.section("flow speed (round-robin)"):
        times = _round_robin(fns, args.rounds)
    results, rows = [], []
    for name, (est, accurate) in ests.items():
        wall = statistics.median(times[name]["wall"]) / pairs[name]
        cpu = statistics.median(times[name]["cpu"]) / pairs[name]
        epe: dict[str, float | None] = {}
        with common.section(f"EPE {name}"):
            for strength, tag in ((1.0, ""), (3.0, "_large")):
                for motion in truth.MOTIONS:
                    pair, gt, valid = truth.synthetic_pair(motion, size=size, seed=7, strength=strength)
                    epe[motion + tag] = truth.endpoint_error(est(pair)[0], gt, valid) if accurate else None
        large = [epe[m + "_large"] for m in truth.MOTIONS]
        res = {"algorithm": name, "pairs_per_s_wall": 1 / wall, "pairs_per_s_cpu": 1 / cpu,
               "cpu_ms_per_pair": 1e3 * cpu, "timed_pairs": pairs[name] * args.rounds, "epe": epe,
               "pretrained": accurate, "flow_only_ucf101_hours_2cores": UCF101_FRAMES * cpu / 2 / 3600}
        results.append(res)
        rows.append([name, f"{1 / wall:.1f}", f"{1 / cpu:.1f}", *(_fmt(epe[m]) for m in truth.MOTIONS),
                     _fmt(statistics.mean(large)) if accurate else "n/a",
                     f"{res['flow_only_ucf101_hours_2cores']:.1f}"])
    return results, rows


def _write_avi(path: Path, frames: np.ndarray, fps: int = 25) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(fps, 1))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.bit_rate = 600_000
        for image in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        c.mux(s.encode())


def _dataset(root: Path, videos: int, length: int, size: tuple[int, int]) -> None:
    """Videos of a real clip (test.avi, or synthetic motion) cut at different offsets."""
    base = _frames(200, quick=False)
    if size != (base.shape[2], base.shape[1]):
        import cv2

        base = np.stack([cv2.resize(f, size) for f in base])
    for v in range(videos):
        start = (v * 11) % max(1, len(base) - length)
        _write_avi(root / f"Class{v % 4}" / f"v_{v:03d}.avi", base[start : start + length])


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the prepare workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_prepare(args, work: Path) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Workers 0 (in this process: CPU cost per frame, no pool start-up), 1 and 2 (wall-clock scaling)."""
    size = (160, 120) if args.quick else (320, 240)
    root = work / "videos"
    _dataset(root, args.videos, args.length, size)
    configs = [(algo, preset, w) for (algo, preset) in args.prepare_algos for w in (0, 1, 2)]
    wall: dict[tuple, list[float]] = {c: [] for c in configs}
    cpu: dict[tuple, list[float]] = {c: [] for c in configs}
    frames = args.videos * args.length
    with common.section("prepare scaling"):
        for r in range(args.prepare_rounds):
            for algo, preset, w in configs if r % 2 == 0 else configs[::-1]:
                out = work / f"out-{algo}-{preset}-{w}-{r}"
                opts = {"preset": preset} if algo == "dis" else {}
                t, c = time.perf_counter(), _cpu()
                s = prepare_dataset(root, out, flow=algo, flow_opts=opts, workers=w, progress=False)
                wall[(algo, preset, w)].append(time.perf_counter() - t)
                cpu[(algo, preset, w)].append(_cpu() - c)
                assert s.ok == args.videos and s.frames == frames, s
                shutil.rmtree(out)
    results, rows = [], []
    for algo, preset in args.prepare_algos:
        fps = {w: frames / statistics.median(wall[(algo, preset, w)]) for w in (0, 1, 2)}
        cpu_ms = 1e3 * statistics.median(cpu[(algo, preset, 0)]) / frames
        hours = UCF101_FRAMES * cpu_ms / 1e3 / 2 / 3600  # two workers, one core each
        cpu_ratio = statistics.median(cpu[(algo, preset, 2)]) / statistics.median(cpu[(algo, preset, 1)])
        name = f"{algo}-{preset}" if preset else algo
        results.append({"algorithm": name, "cpu_ms_per_frame": cpu_ms,
                        "frames_per_s": {str(w): fps[w] for w in (0, 1, 2)}, "speedup_2_vs_1": fps[2] / fps[1],
                        "cpu_2_vs_1_workers": cpu_ratio,
                        "ucf101_hours_2_cores_from_cpu": hours,
                        "wall_s": {str(w): wall[(algo, preset, w)] for w in (0, 1, 2)},
                        "cpu_s": {str(w): cpu[(algo, preset, w)] for w in (0, 1, 2)}})
        rows.append([name, f"{cpu_ms:.2f}", f"{fps[1]:.0f}", f"{fps[2]:.0f}", f"{fps[2] / fps[1]:.2f}x",
                     f"{cpu_ratio:.2f}", f"{hours:.1f}"])
    return results, rows


def main() -> int:
    p = common.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=40, help="pairs per timing round, fast algorithms")
    p.add_argument("--slow-pairs", type=int, default=1, help="pairs per timing round: TV-L1, RAFT")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (medians reported)")
    p.add_argument("--prepare-rounds", type=int, default=2, help="rounds of the prepare runs")
    p.add_argument("--skip-raft", action="store_true")
    p.add_argument("--only", choices=("flow", "prepare"), default=None, help="run one of the two parts")
    p.add_argument("--prepare-algos", default="dis-fast,dis-medium", help="flows for the prepare runs")
    p.add_argument("--videos", type=int, default=10, help="videos for the prepare scaling runs")
    p.add_argument("--length", type=int, default=80, help="frames per video for the prepare runs")
    args = p.parse_args()
    if args.quick:
        args.pairs, args.rounds, args.videos, args.length, args.prepare_rounds = 4, 1, 4, 12, 1
    names = args.prepare_algos.split(",") if not args.quick else ["dis-fast"]
    args.prepare_algos = [tuple(n.split("-", 1)) if "-" in n else (n, None) for n in names]
    load_before = common.loadavg()
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    flow_results, flow_rows = bench_flow(args) if args.only != "prepare" else ([], [])
    prep_results, prep_rows = [], []
    if args.only != "flow":
        work = Path(tempfile.mkdtemp(prefix="stfn-bench-flow-"))
        try:
            prep_results, prep_rows = bench_prepare(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    info = common.machine_info()
    print(f"\n{common.machine_line(info)}")
    if flow_rows:
        print(f"\nOptical flow at {'160x120' if args.quick else '320x240'}, 1 thread; EPE in pixels "
              "(synthetic ground truth)\n")
        print(common.md_table(["algorithm", "pairs/s (wall)", "pairs/s (CPU time)", "EPE shift", "EPE rotate",
                               "EPE zoom", "EPE large (mean)", "flow-only h for UCF101, 2 cores"], flow_rows))
    if prep_rows:
        print(f"\n`stfn prepare` end to end ({args.videos} AVIs x {args.length} frames; decode + flow + "
              "3 JPEGs/frame)\n")
        print(common.md_table(["flow", "CPU ms/frame", "frames/s 1 worker", "frames/s 2 workers", "speed-up",
                               "CPU s, 2 workers / 1", "UCF101 (2.5 M frames) h, 2 cores (from CPU time)"], prep_rows))
    path = common.write_results("flow" if args.only is None else f"flow-{args.only}", {"flow": flow_results, "prepare": prep_results,
                                          "settings": {k: v for k, v in vars(args).items() if k != "out"}},
                                args.out, load_before)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
