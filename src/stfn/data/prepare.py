"""Dataset preparation: decode every video, resize, compute optical flow, write the MMAction2 layout.

``prepare_dataset(video_root, out_dir)`` writes, per video,
``out_dir/<key>/img_00001.jpg ...`` (N RGB frames) and ``flow_x_00001.jpg``, ``flow_y_00001.jpg`` ...
(N-1 quantised flow fields, see :mod:`stfn.data.flow`), where ``<key>`` is the video's path relative
to ``video_root`` without extension. Then a manifest (``manifest.json``, or
``manifest-shard{I}of{N}.json`` per shard; :func:`load_manifest` merges them) and list files
(``rawframes.txt``: ``<key> <n_frames>``; ``rawframes_flow.txt``: ``<key> <n_flows>``: the MMAction2
rawframe format without its label column).

Parallel over videos (worker processes, one OpenCV/FFmpeg thread each); ``shard=(i, n)`` takes every
n-th video from the i-th, so machines or Slurm array tasks can share one dataset and one output folder.

Resumable and atomic. A worker writes a video into ``out_dir/.stfn-prepare/tmp*/`` and renames the
folder into place when it is complete; then the main process appends the video's record to a journal
(``.stfn-prepare/journal*.jsonl``). Running the same call again, after ``kill -9`` at any moment, skips
the journalled videos whose folders hold the recorded counts and redoes the rest. Failed videos (corrupt
files) are journalled too, are not retried unless ``retry_failed`` or the source file changed, and do
not stop the others. A worker process that crashes (decoder segfault, out of memory) only fails the
video it was working on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stfn.data import flow as flowlib
from stfn.data import video as videolib
from stfn.errors import StfnError
from stfn.fileio import atomic_write_json, atomic_write_text

__all__ = [
    "VIDEO_EXTENSIONS",
    "Manifest",
    "PrepareSummary",
    "find_videos",
    "load_manifest",
    "parse_shard",
    "prepare_dataset",
]

MANIFEST_VERSION = 1
STATE_DIR = ".stfn-prepare"
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")


@dataclass
class Manifest:
    """The merged manifest of a prepared folder. ``videos[key]`` holds ``source``, ``status``
    (``ok``/``failed``), ``frames``, ``flows``, ``width``, ``height``, ``fps``, ``error``."""

    root: Path
    videos: dict[str, dict[str, Any]]
    flow: dict[str, Any]
    resize: dict[str, Any]

    @property
    def flow_bound(self) -> float:
        return float(self.flow.get("bound", flowlib.DEFAULT_BOUND))

    def ok(self) -> dict[str, dict[str, Any]]:
        """The videos that were prepared successfully."""
        return {k: v for k, v in self.videos.items() if v["status"] == "ok"}


@dataclass
class PrepareSummary:
    """What one :func:`prepare_dataset` call did (``failures``: ``(key, error)`` of all failed videos)."""

    out_dir: str
    manifest: str
    total: int  # videos of this shard
    done_before: int  # already complete (or failed) from an earlier run, skipped
    processed: int  # prepared in this call
    ok: int  # ok videos of this shard after the call
    failed: int  # failed videos of this shard after the call
    frames: int  # frames written in this call
    seconds: float
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{self.ok} of {self.total} videos prepared in {self.out_dir} ({self.done_before} done earlier, "
            f"{self.processed} now: {self.frames} frames in {self.seconds:.1f} s, {rate:.0f} frames/s); "
            f"manifest {self.manifest}"
        ]
        if self.failures:
            n = len(self.failures)
            lines.append(f"{n} video{'s' if n > 1 else ''} failed (recorded in the manifest):")
            lines += [f"  {k}: {e}" for k, e in self.failures[:20]]
            if len(self.failures) > 20:
                lines.append(f"  ... and {len(self.failures) - 20} more")
        return "\n".join(lines)


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N), a tuple, ``None`` (0/1) or ``"auto"`` (Slurm array or torchrun env)."""
    if text is None:
        return 0, 1
    if isinstance(text, tuple):
        i, n = text
    elif text == "auto":
        env = os.environ
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            i = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            n = int(env["SLURM_ARRAY_TASK_COUNT"])
        else:
            i, n = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
    else:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise StfnError(f"shard '{text}' must look like I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise StfnError(f"shard {i}/{n} is out of range: need 0 <= I < N")
    return i, n


def _suffix(shard: tuple[int, int]) -> str:
    return "" if shard == (0, 1) else f"-shard{shard[0]}of{shard[1]}"


def find_videos(
    video_root: str | os.PathLike,
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
    list_file: str | os.PathLike | None = None,
    exclude: str | os.PathLike | None = None,
) -> tuple[Path, list[tuple[str, str]]]:
    """Video files under ``video_root`` (a folder, searched recursively, or a single file).

    Returns ``(root, [(key, relative source path), ...])`` sorted by key. ``list_file`` restricts the
    search to the paths it lists (first column of each line, relative to ``video_root``: UCF101
    train/test lists work as they are). ``exclude``: a folder not to search (the output folder).
    """
    src = Path(video_root)
    if src.is_file():
        return src.parent, [(src.stem, src.name)]
    if not src.is_dir():
        raise StfnError(f"video root '{src}' does not exist")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if list_file is not None:
        lf = Path(list_file)
        if not lf.is_file():
            raise StfnError(f"list file '{lf}' does not exist")
        rels = [ln.split()[0] for ln in lf.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        missing = [r for r in rels if not (src / r).is_file()]
        if missing:
            raise StfnError(
                f"{len(missing)} of the {len(rels)} videos listed in '{lf}' are not under '{src}', "
                f"e.g. '{missing[0]}'"
            )
    else:
        skip = Path(exclude).resolve() if exclude is not None else None
        rels = []
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and (Path(dirpath, d).resolve() != skip)
            )
            base = Path(dirpath).relative_to(src)
            rels += [(base / f).as_posix() for f in filenames if not f.startswith(".") and f.lower().endswith(exts)]
    by_key: dict[str, str] = {}
    for rel in rels:
        key = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
        if key in by_key and by_key[key] != rel:
            raise StfnError(f"videos '{by_key[key]}' and '{rel}' would share the output folder '{key}'")
        by_key[key] = rel
    if not by_key:
        raise StfnError(f"no video files ({', '.join(exts)}) under '{src}'")
    return src, sorted(by_key.items())


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                records[rec.pop("key")] = rec
            except (ValueError, KeyError, AttributeError):
                continue  # a line cut short by a kill
    return records


def _complete(folder: Path, rec: dict[str, Any]) -> bool:
    """Cheap check that ``folder`` holds exactly the recorded numbers of frames and flow fields."""
    n, m = rec.get("frames", 0), rec.get("flows", 0)
    if n < 1 or not (folder / f"img_{n:05d}.jpg").is_file() or (folder / f"img_{n + 1:05d}.jpg").exists():
        return False
    for c in ("x", "y"):
        if m and not (folder / f"flow_{c}_{m:05d}.jpg").is_file():
            return False
        if (folder / f"flow_{c}_{m + 1:05d}.jpg").exists():
            return False
    return True


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _manifest_dict(settings: dict[str, Any], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    fields = ("source", "status", "frames", "flows", "width", "height", "fps", "error")
    videos = {k: {f: records[k].get(f) for f in fields} for k in sorted(records)}
    return {"version": MANIFEST_VERSION, "flow": settings["flow"], "resize": settings["resize"], "videos": videos}


def load_manifest(root: str | os.PathLike) -> Manifest:
    """Read and merge ``root/manifest.json`` and every ``root/manifest-shard*of*.json``."""
    root = Path(root)
    paths = sorted(root.glob("manifest.json")) + sorted(root.glob("manifest-shard*of*.json"))
    if not paths:
        raise StfnError(f"no manifest.json in '{root}': prepare it first with `stfn prepare VIDEO_ROOT {root}`")
    videos: dict[str, dict[str, Any]] = {}
    flow = resize = None
    for p in paths:
        try:
            data = json.loads(p.read_text())
            f, r, vids = data["flow"], data["resize"], data["videos"]
        except (ValueError, KeyError, TypeError):
            raise StfnError(f"manifest '{p}' is not a valid stfn manifest") from None
        if flow is None:
            flow, resize = f, r
        elif (f, r) != (flow, resize):
            raise StfnError(f"manifest '{p}' was prepared with other flow/resize settings than '{paths[0]}'")
        for key, rec in vids.items():
            if key not in videos or rec.get("status") == "ok":
                videos[key] = rec
    return Manifest(root=root, videos=dict(sorted(videos.items())), flow=flow or {}, resize=resize or {})


def _write_lists(out: Path) -> None:
    m = load_manifest(out)
    ok = m.ok()
    atomic_write_text(out / "rawframes.txt", "".join(f"{k} {v['frames']}\n" for k, v in ok.items()))
    if m.flow.get("algorithm", "none") != "none":
        atomic_write_text(out / "rawframes_flow.txt", "".join(f"{k} {v['flows']}\n" for k, v in ok.items()))


@contextlib.contextmanager
def _shard_lock(state: Path, suffix: str):
    """Exclusive lock for one shard; waits (up to 30 s) for worker processes of a killed run to exit."""
    try:
        import fcntl
    except ImportError:  # Windows: no locking
        yield
        return
    lock = open(state / f"lock{suffix}", "a")  # noqa: SIM115
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StfnError(f"another stfn prepare is writing shard '{suffix or '0/1'}' of '{state.parent}'") from None
        with open(state / f"workers{suffix}.lock", "a") as wl:
            deadline = time.monotonic() + 30
            while True:  # orphaned workers hold a shared lock until their watchdog ends them
                try:
                    fcntl.flock(wl, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(wl, fcntl.LOCK_UN)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise StfnError(f"worker processes of an earlier run still write into '{state.parent}'") from None
                    time.sleep(0.1)
        yield
    finally:
        lock.close()


def _settings(flow: str, flow_opts: dict[str, Any], bound: float, short_side, size, quality: int) -> dict[str, Any]:
    if flow != "none" and flow not in flowlib.ALGORITHMS:
        raise StfnError(f"unknown flow algorithm '{flow}' (choose {', '.join(flowlib.ALGORITHMS)}, none)")
    if short_side is not None and size is not None:
        raise StfnError("give either a short side or a size (WxH) to resize to, not both")
    fl: dict[str, Any] = {"algorithm": flow}
    if flow == "dis":
        fl["preset"] = flow_opts.get("preset", flowlib.DEFAULT_DIS_PRESET)
    if flow == "raft":
        fl.update(model=flow_opts.get("model", "small"), weights=str(flow_opts.get("weights", "default")),
                  iters=int(flow_opts.get("iters", 12)))
    fl["bound"] = float(bound)
    resize = {"short_side": int(short_side)} if short_side else {"size": [int(size[0]), int(size[1])]} if size else {}
    return {"flow": fl, "resize": resize, "jpeg_quality": int(quality)}


def prepare_dataset(
    video_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    flow: str = flowlib.DEFAULT_ALGORITHM,
    flow_opts: dict[str, Any] | None = None,
    bound: float = flowlib.DEFAULT_BOUND,
    workers: int | None = None,
    short_side: int | None = None,
    size: tuple[int, int] | None = None,
    shard: tuple[int, int] | str | None = None,
    list_file: str | os.PathLike | None = None,
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
    jpeg_quality: int = 95,
    retry_failed: bool = False,
    progress: bool = True,
) -> PrepareSummary:
    """Prepare every video under ``video_root`` into ``out_dir`` (see the module docstring).

    Args:
        flow: ``dis`` (default), ``tvl1``, ``farneback``, ``raft`` or ``none`` (frames only).
        flow_opts: options of the algorithm: ``preset`` (dis); ``model``, ``weights``, ``device``,
            ``iters``, ``batch_size`` (raft); see :func:`stfn.data.flow.create_estimator`.
        bound: flow values are clipped to +/- ``bound`` pixels before quantisation.
        workers: worker processes (default: the CPU cores this process may use).
        short_side / size: resize frames (aspect kept) / to ``(W, H)``; neither keeps the source size.
        shard: ``(i, n)``, ``"I/N"`` or ``"auto"``: prepare the videos ``i, i+n, i+2n, ...`` only.
        list_file: only the videos listed (paths relative to ``video_root``, first column).
        retry_failed: prepare again the videos an earlier run recorded as failed.
        progress: show a progress bar (videos done, frames/s, time left) on stderr.
    """
    flow_opts = dict(flow_opts or {})
    settings = _settings(flow, flow_opts, bound, short_side, size, jpeg_quality)
    if flow != "none":  # fail here, once, on a bad option, a missing algorithm or unreachable weights
        flowlib.create_estimator(flow, **{**flow_opts, **({"device": "cpu"} if flow == "raft" else {})})
    i, n = parse_shard(shard)
    suffix = _suffix((i, n))
    out = Path(out_dir)
    root, videos = find_videos(video_root, extensions, list_file, exclude=out)
    mine = videos[i::n]
    out.mkdir(parents=True, exist_ok=True)
    state = out / STATE_DIR
    state.mkdir(exist_ok=True)
    t0 = time.monotonic()
    with _shard_lock(state, suffix):
        saved = state / "settings.json"
        if saved.is_file() and json.loads(saved.read_text()) != settings:
            raise StfnError(
                f"'{out}' was prepared with other settings ({json.dumps(json.loads(saved.read_text()))}) than "
                f"this call's ({json.dumps(settings)}); use a new output folder or the same options"
            )
        atomic_write_json(saved, settings)
        tmp_root = state / f"tmp{suffix}"
        shutil.rmtree(tmp_root, ignore_errors=True)
        journal_path = state / f"journal{suffix}.jsonl"
        known: dict[str, dict[str, Any]] = {}
        for jp in sorted(state.glob("journal*.jsonl")):
            known.update({k: r for k, r in _read_journal(jp).items() if k not in known or r["status"] == "ok"})
        assigned = {k for k, _ in mine}
        records = {k: r for k, r in _read_journal(journal_path).items() if k not in assigned}  # earlier lists
        tasks = []
        for key, rel in mine:
            rec, src = known.get(key), root / rel
            if rec is not None and rec.get("stamp") == _stamp(src):
                if rec["status"] == "ok" and _complete(out / key, rec):
                    records[key] = rec
                    continue
                if rec["status"] == "failed" and not retry_failed:
                    records[key] = rec
                    continue
            tasks.append({"key": key, "rel": rel, "source": str(src), "final": str(out / key),
                          "tmp": str(tmp_root / f"{len(tasks):07d}"), "stamp": _stamp(src)})
        done_before = len(mine) - len(tasks)
        runtime = {**settings, "flow_opts": flow_opts}
        manifest_path = out / f"manifest{suffix}.json"
        frames = 0
        with open(journal_path, "a") as journal:
            last_save = time.monotonic()

            def record(task: dict[str, Any], rec: dict[str, Any]) -> None:
                nonlocal frames, last_save
                rec["stamp"] = task["stamp"]
                journal.write(json.dumps({"key": task["key"], **rec}) + "\n")
                journal.flush()
                records[task["key"]] = rec
                frames += rec["frames"] if rec["status"] == "ok" else 0
                if time.monotonic() - last_save > 60:
                    atomic_write_json(manifest_path, _manifest_dict(settings, records))
                    last_save = time.monotonic()

            try:
                _run(tasks, runtime, record, workers, state / f"workers{suffix}.lock", progress,
                     desc=f"prepare {i}/{n}" if n > 1 else "prepare")
            finally:
                atomic_write_json(manifest_path, _manifest_dict(settings, records))
        shutil.rmtree(tmp_root, ignore_errors=True)
        _write_lists(out)
    failures = [(k, records[k]["error"]) for k, _ in mine if records[k]["status"] != "ok"]
    return PrepareSummary(
        out_dir=str(out),
        manifest=str(manifest_path),
        total=len(mine),
        done_before=done_before,
        processed=len(tasks),
        ok=len(mine) - len(failures),
        failed=len(failures),
        frames=frames,
        seconds=time.monotonic() - t0,
        failures=failures,
    )


# --- one video (runs in a worker process) ----------------------------------------------------------

_RUNTIME: dict[str, Any] = {}


def _imwrite(path: Path, image: np.ndarray, params: list[int]) -> None:
    import cv2

    if not cv2.imwrite(str(path), image, params):
        raise StfnError(f"cannot write '{path}' (disk full or not writable?)")


def _write_flows(flows: np.ndarray, folder: Path, start: int, bound: float, params: list[int]) -> int:
    """Quantise and write ``flows (K, H, W, 2)`` as fields ``start+1 ...``; returns the new count."""
    q = flowlib.quantize_flow(flows, bound)
    for k in range(len(q)):
        _imwrite(folder / f"flow_x_{start + k + 1:05d}.jpg", q[k, ..., 0], params)
        _imwrite(folder / f"flow_y_{start + k + 1:05d}.jpg", q[k, ..., 1], params)
    return start + len(q)


def _prepare_video(task: dict[str, Any]) -> dict[str, Any]:
    """Decode one video into a temporary folder, then rename the complete folder into place."""
    import cv2

    rt = _RUNTIME
    src, tmp, final = task["source"], Path(task["tmp"]), Path(task["final"])
    rec: dict[str, Any] = {"source": task["rel"], "status": "failed", "frames": 0, "flows": 0,
                           "width": None, "height": None, "fps": None, "error": None}
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        info = videolib.probe(src)
        resize = rt["resize"]
        w, h = videolib.resize_shape(info.width, info.height, resize.get("short_side"), resize.get("size"))
        rec.update(width=w, height=h, fps=round(info.fps, 3))
        fl = rt["flow"]
        estimator = None
        if fl["algorithm"] != "none":
            opts = {k: v for k, v in rt["flow_opts"].items() if k != "device"}
            if fl["algorithm"] == "raft":  # the worker's GPU, or the one asked for
                opts["device"] = rt.get("device") or rt["flow_opts"].get("device", "auto")
            estimator = flowlib._cached(fl["algorithm"], tuple(sorted(opts.items())))
        params = [cv2.IMWRITE_JPEG_QUALITY, rt["jpeg_quality"]]
        pairwise = isinstance(estimator, flowlib.OpenCVFlow)  # else batched (RAFT): chunks of frames
        chunk = max(2, int(rt["flow_opts"].get("batch_size", 8)))
        n = m = 0
        prev, buf = None, []
        for frame in videolib.iter_frames(src, size=(w, h), threads=1):
            n += 1
            _imwrite(tmp / f"img_{n:05d}.jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
            if pairwise:
                gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
                if prev is not None:
                    m = _write_flows(estimator.pair(prev, gray)[None], tmp, m, fl["bound"], params)
                prev = gray
            elif estimator is not None:
                buf.append(frame)
                if len(buf) > chunk:
                    m = _write_flows(estimator(np.stack(buf)), tmp, m, fl["bound"], params)
                    buf = buf[-1:]
        if len(buf) > 1:
            m = _write_flows(estimator(np.stack(buf)), tmp, m, fl["bound"], params)
        rec.update(frames=n, flows=m)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # left by a run killed between this rename and its journal line
            shutil.rmtree(final)
        os.rename(tmp, final)
        rec["status"] = "ok"
    except StfnError as e:
        rec["error"] = str(e)
    except Exception as e:  # one bad video must not stop the others
        rec["error"] = f"{type(e).__name__} while preparing '{src}': {e}"
    finally:
        if rec["status"] != "ok":
            rec.update(frames=0, flows=0)
            shutil.rmtree(tmp, ignore_errors=True)
    return rec


def _worker_init(runtime: dict[str, Any], parent: int, workers_lock: str, counter) -> None:
    """Worker set-up: one thread per library, ignore Ctrl-C (the parent handles it), exit with the parent."""
    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    _RUNTIME.clear()
    _RUNTIME.update(runtime)
    if runtime["flow"]["algorithm"] == "raft":
        import torch

        torch.set_num_threads(1)
        device = runtime["flow_opts"].get("device", "auto")
        if device == "auto" and torch.cuda.is_available():  # spread workers over the GPUs
            with counter.get_lock():
                index, counter.value = counter.value, counter.value + 1
            rank = int(os.environ.get("LOCAL_RANK", index))
            device = f"cuda:{rank % torch.cuda.device_count()}"
        _RUNTIME["device"] = device
    try:
        import fcntl

        _RUNTIME["_lock"] = lock = open(workers_lock, "a")  # noqa: SIM115
        fcntl.flock(lock, fcntl.LOCK_SH)
    except ImportError:
        pass

    def watchdog() -> None:  # a parent killed with SIGKILL cannot stop us: stop ourselves
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()


# --- the pool ------------------------------------------------------------------------------------


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _run(
    tasks: list[dict[str, Any]],
    runtime: dict[str, Any],
    record: Callable[[dict[str, Any], dict[str, Any]], None],
    workers: int | None,
    workers_lock: Path,
    progress: bool,
    desc: str,
) -> None:
    """Run ``_prepare_video`` over ``tasks`` in worker processes, calling ``record`` as each ends.

    ``workers=0`` runs in this process. If a worker process dies, the videos that were in flight are
    run again one at a time, so that only the video that kills its worker is recorded as failed.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    workers = _default_workers() if workers is None else max(0, int(workers))
    bar = tqdm(total=len(tasks), desc=desc, unit="video", disable=not progress or not tasks, file=sys.stderr,
               mininterval=0.5)
    t0, frames, failed = time.monotonic(), 0, 0

    def done(task: dict[str, Any], rec: dict[str, Any]) -> None:
        nonlocal frames, failed
        record(task, rec)
        frames += rec["frames"]
        failed += rec["status"] != "ok"
        bar.update(1)
        bar.set_postfix_str(f"{frames / max(time.monotonic() - t0, 1e-9):.0f} frames/s, {failed} failed", refresh=False)

    try:
        if workers == 0 or len(tasks) == 0:
            import cv2

            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)  # same work per process as a worker; restored below
            _RUNTIME.clear()
            _RUNTIME.update(runtime)
            try:
                for task in tasks:
                    done(task, _prepare_video(task))
            finally:
                cv2.setNumThreads(threads)
            return
        ctx = mp.get_context("spawn")
        counter = ctx.Value("i", 0)

        def pool() -> ProcessPoolExecutor:
            initargs = (runtime, os.getpid(), str(workers_lock), counter)
            return ProcessPoolExecutor(min(workers, len(tasks)), ctx, _worker_init, initargs)

        queue, suspects = deque(tasks), deque()
        inflight: dict[Any, dict[str, Any]] = {}
        executor = pool()
        finished_ok = False
        try:
            while queue or suspects or inflight:
                # after a crash: one video at a time until every suspect has run on its own
                alone = bool(suspects) or any(t["alone"] for t in inflight.values())
                while (suspects or (queue and not alone)) and len(inflight) < (1 if alone else 2 * workers):
                    task = suspects.popleft() if suspects else queue.popleft()
                    task["alone"] = alone
                    inflight[executor.submit(_prepare_video, task)] = task
                finished, _ = wait(list(inflight), timeout=1.0, return_when=FIRST_COMPLETED)
                broken = False
                for fut in finished:
                    task = inflight.pop(fut)
                    try:
                        done(task, fut.result())
                    except BrokenProcessPool:
                        broken = True
                        if task["alone"]:
                            done(task, _crashed(task))
                        else:
                            suspects.append(task)
                if broken:
                    suspects.extend(t for t in inflight.values() if not t["alone"])
                    for t in [t for t in inflight.values() if t["alone"]]:
                        done(t, _crashed(t))
                    inflight.clear()
                    _stop(executor)
                    executor = pool()
            executor.shutdown(wait=True)  # idle workers exit and are reaped
            finished_ok = True
        finally:
            if not finished_ok:
                _stop(executor)
    finally:
        bar.close()


def _crashed(task: dict[str, Any]) -> dict[str, Any]:
    return {"source": task["rel"], "status": "failed", "frames": 0, "flows": 0, "width": None, "height": None,
            "fps": None, "error": f"the worker process died while preparing '{task['source']}' "
                                  "(decoder crash or out of memory)"}


def _stop(executor) -> None:
    """Shut the pool down now (interrupt, broken pool): workers must not finish their videos first."""
    procs = list((getattr(executor, "_processes", None) or {}).values())  # shutdown() forgets them
    executor.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=5)
