"""A stress run at UCF101's size (issue 26): generate, prepare packed in 2 shards, train, evaluate, kill.

``stfn synth --preset stress`` (101 classes, 13130 videos of 320x240), then for each of ``--sizes``
(nested subsets, every class in each, the train/test ratio kept): ``stfn prepare --format packed
--list`` as two concurrent ``--shard I/2`` processes (a Slurm array of 2 on one machine, one worker
each; each size adds the videos the last one did not have), the manifest's load time, the training
loader (``VideoFrameDataset`` at T = 8, L = 5, 224 crop, one thread: clips/s), ``stfn train`` one epoch
(``configs/tiny.yaml``) and ``stfn eval``; every stage in its own process, its peak RSS from ``wait4``
(the largest of the process and the workers it waited for). At the largest size shard 0 is killed
with SIGKILL after ``--kill-after`` seconds and run again; the manifest must then hold every video.

Usage::

    python benchmarks/stress_run.py                       # ~1 h on 2 cores; needs ~12 GB in --root
    python benchmarks/stress_run.py --quick               # a few small sizes, a smoke test
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

REPO = Path(__file__).resolve().parents[1]


def _wait(pid: int, timeout: float | None = None) -> tuple[int, Any] | None:
    """``(exit status, rusage)`` of child ``pid`` once it ends (``os.wait4``: the rusage of the child and the
    children it waited for); None when ``timeout`` seconds pass first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG if deadline is not None else 0)
        if got == pid:
            return os.waitstatus_to_exitcode(status), usage
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def run(cmd: list[str], log: Path, kill_after: float | None = None) -> dict[str, Any]:
    """Run ``cmd`` (output to ``log``); seconds, exit status, peak RSS (MB) and whether it was killed."""
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    done = _wait(proc.pid, kill_after) if kill_after is not None else None
    if kill_after is not None and done is None:
        os.kill(proc.pid, signal.SIGKILL)
    rc, usage = done or _wait(proc.pid)
    return {"seconds": time.perf_counter() - t0, "rc": rc, "peak_rss_mb": usage.ru_maxrss / 1024,
            "killed": done is None and kill_after is not None}


def run_pair(cmds: list[list[str]], log: Path, kill_first_after: float | None = None) -> list[dict[str, Any]]:
    """Two commands at once (the shards); the first one killed after ``kill_first_after`` seconds."""
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        procs = [subprocess.Popen(c, stdout=out, stderr=subprocess.STDOUT) for c in cmds]
    results: list[dict[str, Any]] = [{} for _ in procs]
    first = _wait(procs[0].pid, kill_first_after) if kill_first_after is not None else None
    if kill_first_after is not None and first is None:
        os.kill(procs[0].pid, signal.SIGKILL)
        results[0]["killed"] = True
    for i, proc in enumerate(procs):
        rc, usage = (first if i == 0 and first else None) or _wait(proc.pid)
        results[i].update(seconds=time.perf_counter() - t0, rc=rc, peak_rss_mb=usage.ru_maxrss / 1024)
    return results


def nested_subsets(splits: Path, sizes: list[int]) -> list[tuple[list[str], list[str]]]:
    """For each size, ``(train lines, test lines)`` of the first videos of an order that cycles through
    the classes and, in each class, through train and test in proportion: nested, every class in each."""
    train = [ln for ln in (splits / "trainlist01.txt").read_text().splitlines() if ln]
    test = [ln for ln in (splits / "testlist01.txt").read_text().splitlines() if ln]
    per_class: dict[str, list[tuple[float, str, str]]] = {}
    for side, lines in (("train", train), ("test", test)):
        counts: dict[str, int] = {}
        for ln in lines:
            cls = ln.split("/")[0]
            counts[cls] = counts.get(cls, 0) + 1
        seen: dict[str, int] = {}
        for ln in lines:
            cls = ln.split("/")[0]
            seen[cls] = seen.get(cls, 0) + 1
            per_class.setdefault(cls, []).append((seen[cls] / counts[cls], side, ln))
    order = []
    queues = [sorted(v) for v in per_class.values()]
    for rank in range(max(len(q) for q in queues)):
        order += [q[rank] for q in queues if rank < len(q)]
    return [([ln for _, s, ln in order[:n] if s == "train"], [ln for _, s, ln in order[:n] if s == "test"])
            for n in sizes]


def loader_child(prepared: str, splits: str, clips: int) -> None:
    """(In its own process.) Manifest load time, dataset build time and training-loader clips/s."""
    import torch

    from stfn.config import DataConfig
    from stfn.data.datasets import build_dataset
    from stfn.data.prepare.manifest import load_manifest

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    manifest = load_manifest(prepared)
    t1 = time.perf_counter()
    cfg = DataConfig(dataset="synthetic", root=prepared, splits=splits, frames=8, scale_size=240, crop_size=224)
    ds = build_dataset(cfg, "train", ["rgb", "flow"], 5)
    t2 = time.perf_counter()
    ds[(0, 0)]
    t3 = time.perf_counter()
    for i in range(clips):
        ds[((i * 7919) % len(ds), i)]
    rate = clips / (time.perf_counter() - t3)
    print(json.dumps({"manifest_videos": len(manifest.videos), "manifest_load_s": t1 - t0,
                      "dataset_build_s": t2 - t1, "train_items": len(ds), "clips_per_s": rate}))


def prepare_size(args: Any, root: Path, videos: Path, lines: list[str], n: int, kill: bool) -> dict[str, Any]:
    """Prepare the videos of ``lines`` (packed, 2 shards); at ``kill``, shard 0 is killed and rerun."""
    listed = root / f"list-{n}.txt"
    listed.write_text("".join(ln.split()[0] + "\n" for ln in lines))
    cmd = [sys.executable, "-m", "stfn", "prepare", str(videos), str(root / "prepared"), "--format", "packed",
           "--list", str(listed), "--workers", "1", "--quiet"]
    shards = run_pair([cmd + ["--shard", f"{i}/2"] for i in range(2)], root / "prepare.log",
                      args.kill_after if kill else None)
    out: dict[str, Any] = {"shards": shards}
    if kill and shards[0].get("killed"):
        out["resumed"] = run(cmd + ["--shard", "0/2"], root / "prepare.log")
    from stfn.data.prepare.manifest import load_manifest

    m = load_manifest(root / "prepared")
    out["ok"] = len(m.ok())
    out["frames"] = sum(v["frames"] for v in m.ok().values())
    return out


def one_size(args: Any, root: Path, videos: Path, subset: tuple[list[str], list[str]], n: int,
             kill: bool) -> dict[str, Any]:
    """Every stage at one size."""
    train, test = subset
    splits = root / f"splits-{n}"
    splits.mkdir(exist_ok=True)
    shutil.copy(root / "syn" / "splits" / "classInd.txt", splits / "classInd.txt")
    (splits / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (splits / "testlist01.txt").write_text("\n".join(ln.split()[0] for ln in test) + "\n")
    row: dict[str, Any] = {"videos": n, "train": len(train), "test": len(test)}
    with common.section(f"prepare {n}"):
        row["prepare"] = prepare_size(args, root, videos, train + test, n, kill)
    child = root / f"loader-{n}.json"
    with common.section(f"loader {n}"):
        row["loader"] = run([sys.executable, __file__, "--loader-child", str(root / "prepared"), str(splits),
                             str(args.clips)], child)
        row["loader"].update(json.loads(child.read_text().splitlines()[-1]))
    out = root / f"run-{n}"
    shutil.rmtree(out, ignore_errors=True)
    train_cmd = [sys.executable, "-m", "stfn", "train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data",
                 str(root / "prepared"), "--splits", str(splits), "--out", str(out), "--no-progress",
                 "--set", "data.dataset=synthetic", "--set", "train.epochs=1", "--set", "data.num_workers=1"]
    with common.section(f"train {n}"):
        row["train_epoch"] = run(train_cmd, root / "train.log")
    with common.section(f"eval {n}"):
        row["eval"] = run([sys.executable, "-m", "stfn", "eval", str(out / "best.pt"), "--no-progress",
                           "--json", str(root / f"eval-{n}.json")], root / "eval.log")
    if (root / f"eval-{n}.json").is_file():
        row["eval"]["top1"] = json.loads((root / f"eval-{n}.json").read_text())["results"][0]["top1"]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        p, ld = r["prepare"], r["loader"]
        shards = p["shards"]
        wall = max(s["seconds"] for s in shards) + p.get("resumed", {}).get("seconds", 0)
        out.append([r["videos"], p["ok"], f"{wall:.0f}", f"{max(s['peak_rss_mb'] for s in shards):.0f}",
                    f"{ld['manifest_load_s'] * 1e3:.0f}", f"{ld['dataset_build_s'] * 1e3:.0f}",
                    f"{ld['clips_per_s']:.1f}", f"{ld['peak_rss_mb']:.0f}",
                    f"{r['train_epoch']['seconds']:.0f}", f"{r['train_epoch']['peak_rss_mb']:.0f}",
                    f"{r['eval']['seconds']:.0f}", f"{r['eval']['peak_rss_mb']:.0f}", r["eval"].get("top1", "-")])
    return common.md_table(["videos", "prepared ok", "prepare s (new videos)", "prepare RSS MB", "manifest load ms",
                            "dataset build ms", "loader clips/s", "loader RSS MB", "train epoch s", "train RSS MB",
                            "eval s", "eval RSS MB", "eval top1"], out)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--loader-child":
        loader_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "stfn-stress",
                   help="working folder (kept: rerun to resume; delete it afterwards)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 13130])
    p.add_argument("--kill-after", type=float, default=120.0, help="seconds before shard 0 of the last size is killed")
    p.add_argument("--clips", type=int, default=200, help="clips the loader stage reads")
    args = p.parse_args(argv)
    synth = [sys.executable, "-m", "stfn", "synth", str(args.root / "syn"), "--preset", "stress", "--workers", "2",
             "--no-progress"]
    if args.quick:
        args.sizes, args.kill_after, args.clips = [10, 20], 2.0, 4
        synth += ["--size", "32", "--frames", "32", "--train", "3", "--test", "2",
                  "--classes", "Square,SquareV1,SlideRightV2,SlideLeftV2"]
    args.root.mkdir(parents=True, exist_ok=True)
    load = common.loadavg()
    with common.section("synth"):
        made = run(synth, args.root / "synth.log")
    subsets = nested_subsets(args.root / "syn" / "splits", args.sizes)
    rows = [one_size(args, args.root, args.root / "syn" / "videos", s, n, n == args.sizes[-1])
            for s, n in zip(subsets, args.sizes, strict=True)]
    print(f"\nsynth: {made['seconds']:.0f} s, peak RSS {made['peak_rss_mb']:.0f} MB\n")
    print(table(rows))
    last = rows[-1]["prepare"]
    print(f"\nlargest size: shard 0 killed: {bool(last['shards'][0].get('killed'))}; "
          f"resumed in {last.get('resumed', {}).get('seconds', 0):.0f} s; {last['ok']} of {args.sizes[-1]} ok")
    common.write_results("stress_run", {"settings": {k: str(v) for k, v in vars(args).items()}, "synth": made,
                                        "sizes": rows}, args.out, load)
    return 0 if all(r["prepare"]["ok"] == r["videos"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
