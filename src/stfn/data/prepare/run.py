"""Dataset preparation: decode every video, resize, compute optical flow, write the MMAction2 layout.

``prepare_dataset(video_root, out_dir)`` writes, per video,
``out_dir/<key>/img_00001.jpg ...`` (N RGB frames) and ``flow_x_00001.jpg``, ``flow_y_00001.jpg`` ...
(N-1 quantised flow fields, see :mod:`stfn.data.video.flow`), where ``<key>`` is the video's path relative
to ``video_root`` without extension. Then a manifest and list files (:mod:`stfn.data.prepare.manifest`).

Parallel over videos (worker processes of :mod:`stfn.data.prepare.pool`, one OpenCV/FFmpeg thread each);
``shard=(i, n)`` takes every n-th video from the i-th, so machines or Slurm array tasks can share one
dataset and one output folder.

Resumable and atomic. A worker writes a video into ``out_dir/.stfn-prepare/tmp*/`` and renames the
folder into place when it is complete; then the main process appends the video's record to a journal
(``.stfn-prepare/journal*.jsonl``). Running the same call again, after ``kill -9`` at any moment, skips
the journalled videos whose folders hold the recorded counts and redoes the rest. Failed videos (corrupt
files) are journalled too, are not retried unless ``retry_failed`` or the source file changed, and do
not stop the others. A write error (no space left, a folder that is not writable) is not the video's
fault: it stops the run with one sentence naming the path, nothing is journalled for that video, and
the same call run again (with space) prepares it. A worker process that crashes (decoder segfault, out
of memory) only fails the video it was working on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stfn.data.prepare.manifest import VIDEO_EXTENSIONS, find_videos, manifest_dict, write_lists
from stfn.data.prepare.packed import FORMATS, PACK_SUFFIX, open_store, pack_folder
from stfn.data.prepare.pool import run_pool
from stfn.data.prepare.state import STATE_DIR, parse_shard, plan, save_settings, shard_lock, shard_suffix
from stfn.data.video import decode as videolib
from stfn.data.video import flow as flowlib
from stfn.errors import ParameterError, StfnError
from stfn.fileio import atomic_write_json, check_writable

__all__ = ["OutputWriteError", "PrepareSummary", "prepare_dataset"]


class OutputWriteError(StfnError):
    """A prepared file or folder could not be written (disk full, not writable): not the video's fault."""


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
    unlisted: list[str] = field(default_factory=list)  # ok videos left out of rawframes*.txt (whitespace)

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
        if self.unlisted:
            n = len(self.unlisted)
            lines.append(f"warning: {n} video name{'s' if n > 1 else ''} with spaces left out of rawframes*.txt "
                         f"(MMAction2 splits those lines on whitespace; stfn reads the manifest and uses them): "
                         + ", ".join(repr(k) for k in self.unlisted[:5]) + (", ..." if n > 5 else ""))
        return "\n".join(lines)


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
    storage: str = "rawframes",
) -> PrepareSummary:
    """Prepare every video under ``video_root`` into ``out_dir`` (see the module docstring).

    Args:
        flow: ``dis`` (default), ``tvl1``, ``farneback``, ``raft`` or ``none`` (frames only).
        flow_opts: options of the algorithm (:data:`stfn.data.video.flow.FLOW_OPTIONS`): ``preset`` (dis);
            ``model``, ``weights``, ``device``, ``iters``, ``batch_size`` (raft).
        bound: flow values are clipped to +/- ``bound`` pixels before quantisation.
        workers: worker processes (default: the CPU cores this process may use).
        short_side / size: resize frames (aspect kept) / to ``(W, H)``; neither keeps the source size.
        shard: ``(i, n)``, ``"I/N"`` or ``"auto"``: prepare the videos ``i, i+n, i+2n, ...`` only.
        list_file: only the videos listed (paths relative to ``video_root``, first column).
        retry_failed: prepare again the videos an earlier run recorded as failed.
        progress: show a progress bar (videos done, frames/s, time left) on stderr.
        storage: ``rawframes`` (MMAction2's folder of JPEGs per video) or ``packed`` (one
            ``<key>.stfnpack`` per video: :mod:`stfn.data.prepare.packed`).
    """
    flow_opts = dict(flow_opts or {})
    if workers is not None and workers < 0:
        raise ParameterError("workers", f"must be 0 (prepare in this process) or more, got {workers}")
    settings = _settings(flow, flow_opts, bound, short_side, size, jpeg_quality, storage)
    runtime = {**settings, "flow_opts": flow_opts, **_check_flow(flow, flow_opts)}
    i, n = parse_shard(shard)
    out = Path(out_dir)
    check_writable(out, "output folder", folder=True)
    root, videos = find_videos(video_root, extensions, list_file, exclude=out)
    out.mkdir(parents=True, exist_ok=True)
    return _prepare_shard(videos[i::n], root, out, (i, n), settings, runtime, workers=workers,
                          retry_failed=retry_failed, progress=progress)


def _prepare_shard(
    mine: list[tuple[str, str]], root: Path, out: Path, shard: tuple[int, int], settings: dict[str, Any],
    runtime: dict[str, Any], *, workers: int | None, retry_failed: bool, progress: bool,
) -> PrepareSummary:
    """Prepare the videos ``mine`` of ``shard`` into ``out`` under the shard's lock: the videos not
    journalled yet (or failed, with ``retry_failed``) in the pool, then the manifest and the list
    files (module docstring); returns what the call did."""
    i, n = shard
    suffix = shard_suffix(shard)
    state = out / STATE_DIR
    state.mkdir(exist_ok=True)
    t0 = time.monotonic()
    with shard_lock(state, suffix):
        save_settings(state / "settings.json", settings, out)
        tmp_root = state / f"tmp{suffix}"
        shutil.rmtree(tmp_root, ignore_errors=True)
        journal_path = state / f"journal{suffix}.jsonl"
        store = open_store(out, settings.get("format", "rawframes"))
        records, tasks = plan(mine, root, store, state, journal_path, tmp_root, retry_failed)
        manifest_path = out / f"manifest{suffix}.json"
        frames = _run(tasks, runtime, records, journal_path, manifest_path, workers=workers,
                      workers_lock=state / f"workers{suffix}.lock", progress=progress,
                      desc=f"prepare {i}/{n}" if n > 1 else "prepare")
        shutil.rmtree(tmp_root, ignore_errors=True)
        unlisted = write_lists(out)
    failures = [(k, records[k]["error"]) for k, _ in mine if records[k]["status"] != "ok"]
    return PrepareSummary(out_dir=str(out), manifest=str(manifest_path), total=len(mine),
                          done_before=len(mine) - len(tasks), processed=len(tasks), ok=len(mine) - len(failures),
                          failed=len(failures), frames=frames, seconds=time.monotonic() - t0, failures=failures,
                          unlisted=unlisted)


def _settings(flow: str, flow_opts: dict[str, Any], bound: float, short_side, size, quality: int,
              storage: str) -> dict[str, Any]:
    """What the output depends on: the manifest's ``flow``, ``resize`` and ``format`` (only when not
    ``rawframes``, so folders prepared before packing existed keep their settings), the JPEG quality."""
    if storage not in FORMATS:
        raise ParameterError("storage", f"must be one of {', '.join(FORMATS)}, got '{storage}'")
    if flow != "none" and flow not in flowlib.ALGORITHMS:
        raise StfnError(f"unknown flow algorithm '{flow}' (choose {', '.join(flowlib.ALGORITHMS)}, none)")
    if short_side is not None and size is not None:
        raise StfnError("give either a short side or a size (WxH) to resize to, not both")
    if not 1 <= int(quality) <= 100:
        raise ParameterError("jpeg_quality", f"must be from 1 to 100, got {quality}")
    resize = {"short_side": int(short_side)} if short_side else {"size": [int(size[0]), int(size[1])]} if size else {}
    settings = {"flow": flowlib.flow_settings(flow, flow_opts, bound), "resize": resize, "jpeg_quality": int(quality)}
    return settings if storage == "rawframes" else {**settings, "format": storage}


def _check_flow(flow: str, flow_opts: dict[str, Any]) -> dict[str, Any]:
    """Fail here, once, on a bad option, a missing algorithm, unreachable weights or a RAFT device that
    does not exist. Returns RAFT's worker ``device`` and ``gpus`` (:func:`stfn.data.video.flow.raft_worker_devices`)."""
    if flow == "none":
        return {}
    flowlib.create_estimator(flow, **{**flow_opts, **({"device": "cpu"} if flow == "raft" else {})})
    if flow != "raft":
        return {}
    device, gpus = flowlib.raft_worker_devices(flow_opts.get("device", flowlib.FLOW_OPTIONS["raft"]["device"].default))
    return {"device": device, "gpus": gpus}


def _run(
    tasks: list[dict[str, Any]], runtime: dict[str, Any], records: dict[str, dict[str, Any]], journal_path: Path,
    manifest_path: Path, *, workers: int | None, workers_lock: Path, progress: bool, desc: str,
) -> int:
    """Prepare ``tasks`` in the pool, journal each video as it ends, save the manifest at least once a
    minute and at the end, show progress (videos, frames/s, failed). Returns the frames written."""
    bar = tqdm(total=len(tasks), desc=desc, unit="video", disable=not progress or not tasks, file=sys.stderr,
               mininterval=0.5)
    frames = failed = 0
    with open(journal_path, "a") as journal:
        t0 = last_save = time.monotonic()

        def record_finished_video(task: dict[str, Any], rec: dict[str, Any]) -> None:
            """A video's result from the pool: journalled, counted, shown; the manifest saved once a minute."""
            nonlocal frames, failed, last_save
            if rec.pop("cause", None) == "write":  # not journalled: the next run redoes this video
                out = journal_path.parent.parent
                raise OutputWriteError(f"{rec['error']}; stopped: free some space (or make '{out}' writable) and "
                                       "run the same command again, which prepares the videos not done")
            rec["stamp"] = task["stamp"]
            try:
                journal.write(json.dumps({"key": task["key"], **rec}) + "\n")
                journal.flush()
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(journal_path)) from None
            records[task["key"]] = rec
            frames += rec["frames"] if rec["status"] == "ok" else 0
            if time.monotonic() - last_save > 60:
                atomic_write_json(manifest_path, manifest_dict(runtime, records))
                last_save = time.monotonic()
            failed += rec["status"] != "ok"
            bar.update(1)
            rate = frames / max(time.monotonic() - t0, 1e-9)
            bar.set_postfix_str(f"{rate:.0f} frames/s, {failed} failed", refresh=False)

        try:
            run_pool(_prepare_video, tasks, record_finished_video, _crashed, workers=workers, setup=_setup, setup_arg=runtime,
                     workers_lock=workers_lock)
        except BaseException:
            bar.close()
            with contextlib.suppress(OSError):  # the first error is the one to report
                atomic_write_json(manifest_path, manifest_dict(runtime, records))
            raise
        bar.close()
        atomic_write_json(manifest_path, manifest_dict(runtime, records))
    return frames


# --- one video (runs in a worker process) ----------------------------------------------------------

_RUNTIME: dict[str, Any] = {}


def _setup(runtime: dict[str, Any], index: int | None) -> None:
    """Set up a process for :func:`_prepare_video`; a RAFT worker (``index``: its start order) runs
    torch on one thread, on its GPU when ``auto`` spreads the workers over them."""
    _RUNTIME.clear()
    _RUNTIME.update(runtime)
    if index is not None and runtime["flow"]["algorithm"] == "raft":
        import torch  # RAFT only: the workers of the OpenCV algorithms do without torch

        torch.set_num_threads(1)
        if runtime["gpus"]:
            rank = int(os.environ.get("LOCAL_RANK", index))
            _RUNTIME["device"] = f"cuda:{rank % runtime['gpus']}"


def _crashed(task: dict[str, Any]) -> dict[str, Any]:
    return {"source": task["rel"], "status": "failed", "frames": 0, "flows": 0, "width": None, "height": None,
            "fps": None, "error": f"the worker process died while preparing '{task['source']}' "
                                  "(decoder crash or out of memory)"}


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """OS errors of the block as :class:`OutputWriteError` naming the path."""
    try:
        yield
    except OSError as e:
        raise OutputWriteError(f"cannot write '{e.filename or path}': {e.strerror or e}") from None


def _imwrite(path: Path, image: np.ndarray, params: list[int]) -> None:
    import cv2  # OpenCV loads in the workers, not when the command line imports this module

    try:
        ok = cv2.imwrite(str(path), image, params)
    except cv2.error:
        ok = False
    if not ok:  # OpenCV says only that it failed: a full disk or a folder we cannot write is not the video's fault
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise OutputWriteError(f"cannot write '{path}': its folder is gone or not writable")
        if shutil.disk_usage(path.parent).free < 1 << 20:
            raise OutputWriteError(f"cannot write '{path}': no space left on the device")
        raise StfnError(f"cannot write '{path}': the JPEG encoder failed on this frame")


def _write_flows(flows: np.ndarray, folder: Path, start: int, bound: float, params: list[int]) -> int:
    """Quantise and write ``flows (K, H, W, 2)`` as fields ``start+1 ...``; returns the new count."""
    q = flowlib.quantize_flow(flows, bound)
    for k in range(len(q)):
        _imwrite(folder / f"flow_x_{start + k + 1:05d}.jpg", q[k, ..., 0], params)
        _imwrite(folder / f"flow_y_{start + k + 1:05d}.jpg", q[k, ..., 1], params)
    return start + len(q)


def _estimator(rt: dict[str, Any]) -> flowlib.FlowEstimator | None:
    """This process's estimator of the run's flow (built once), ``None`` without flow."""
    algorithm = rt["flow"]["algorithm"]
    if algorithm == "none":
        return None
    opts = {k: v for k, v in rt["flow_opts"].items() if k != "device"}
    if algorithm == "raft":  # the worker's GPU, or the device asked for
        opts["device"] = rt["device"]
    return flowlib._cached(algorithm, tuple(sorted(opts.items())))


def _write_frames(src: str, tmp: Path, size: tuple[int, int], rt: dict[str, Any]) -> tuple[int, int]:
    """Decode ``src`` resized to ``size``, write its frames and flow fields into ``tmp``: ``(frames, flows)``."""
    import cv2  # see _imwrite

    estimator, bound = _estimator(rt), rt["flow"]["bound"]
    params = [cv2.IMWRITE_JPEG_QUALITY, rt["jpeg_quality"]]
    pairwise = isinstance(estimator, flowlib.OpenCVFlow)  # else batched (RAFT): chunks of frames
    chunk = max(2, int(rt["flow_opts"].get("batch_size", flowlib.FLOW_OPTIONS["raft"]["batch_size"].default)))
    n = m = 0
    prev, buf = None, []
    for frame in videolib.iter_frames(src, size=size, threads=1):
        n += 1
        _imwrite(tmp / f"img_{n:05d}.jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
        if pairwise:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            if prev is not None:
                m = _write_flows(estimator.pair(prev, gray)[None], tmp, m, bound, params)
            prev = gray
        elif estimator is not None:
            buf.append(frame)
            if len(buf) > chunk:
                m = _write_flows(estimator(np.stack(buf)), tmp, m, bound, params)
                buf = buf[-1:]
    if len(buf) > 1:
        m = _write_flows(estimator(np.stack(buf)), tmp, m, bound, params)
    return n, m


def _prepare_video(task: dict[str, Any]) -> dict[str, Any]:
    """Decode one video into a temporary folder, then rename the complete folder into place."""
    rt = _RUNTIME
    src, tmp, final = task["source"], Path(task["tmp"]), Path(task["final"])
    rec: dict[str, Any] = {"source": task["rel"], "status": "failed", "frames": 0, "flows": 0,
                           "width": None, "height": None, "fps": None, "error": None}
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        with _writing(tmp):
            tmp.mkdir(parents=True)
        info = videolib.probe(src)
        resize = rt["resize"]
        w, h = videolib.resize_shape(info.width, info.height, resize.get("short_side"), resize.get("size"))
        rec.update(width=w, height=h, fps=round(info.fps, 3))
        n, m = _write_frames(src, tmp, (w, h), rt)
        rec.update(frames=n, flows=m)
        with _writing(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            if rt.get("format") == "packed":  # the folder streamed into one file, which replaces any older one
                pack = tmp.with_suffix(PACK_SUFFIX)
                pack_folder(tmp, n, m, pack)
                os.replace(pack, final)
            else:
                if final.exists():  # left by a run killed between this rename and its journal line
                    shutil.rmtree(final)
                os.rename(tmp, final)
        rec["status"] = "ok"
    except OutputWriteError as e:  # not the video's fault: the run stops and a rerun redoes it
        rec.update(error=str(e), cause="write")
    except StfnError as e:
        rec["error"] = str(e)
    except Exception as e:  # one bad video must not stop the others
        rec["error"] = f"{type(e).__name__} while preparing '{src}': {e}"
    finally:
        if rec["status"] != "ok":
            rec.update(frames=0, flows=0)
        shutil.rmtree(tmp, ignore_errors=True)  # a packed video's images, or a failed video's
    return rec
