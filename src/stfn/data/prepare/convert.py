"""``stfn repack``: a prepared folder stored again as ``packed`` or ``rawframes`` (:mod:`stfn.data.prepare.packed`).

The output is a prepared folder like one ``stfn prepare --format`` would write: the same images (byte
for byte), ``manifest.json`` with the new ``format``, the list files, and the state folder's settings and
journals, so ``stfn prepare VIDEO_ROOT OUT`` adds new videos to it and skips the converted ones. Each
video is written whole and then renamed into place; a rerun after an interruption skips the videos
already complete. A video whose images cannot be read is recorded as failed (with the sentence saying
why), and the others go on.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stfn.data.prepare.manifest import load_prepared_manifest, manifest_dict, write_lists
from stfn.data.prepare.packed import FORMATS, FrameStore, open_store, pack_folder, unpack
from stfn.data.prepare.state import STATE_DIR, save_settings, shard_lock
from stfn.errors import ParameterError, StfnError
from stfn.fileio import atomic_write_json, atomic_write_text, check_writable

__all__ = ["RepackSummary", "repack"]


@dataclass
class RepackSummary:
    """What one :func:`repack` call did."""

    out_dir: str
    storage: str
    videos: int  # ok videos of the source
    done_before: int  # already complete in the output, skipped
    converted: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    files_before: int = 0  # image files (or packs) of the source
    files_after: int = 0

    def __str__(self) -> str:
        lines = [f"{self.videos - len(self.failures)} of {self.videos} videos stored as {self.storage} in "
                 f"{self.out_dir} ({self.done_before} done earlier, {self.converted} now; "
                 f"{self.files_before} image files became {self.files_after})"]
        lines += [f"  failed: {k}: {e}" for k, e in self.failures[:20]]
        return "\n".join(lines)


def _settings(src: Path, manifest_flow: dict, manifest_resize: dict, storage: str) -> dict[str, Any]:
    """The source's prepare settings with the new format (``format`` left out for rawframes)."""
    saved = src / STATE_DIR / "settings.json"
    try:
        settings = json.loads(saved.read_text()) if saved.is_file() else {}
    except ValueError:
        raise StfnError(f"'{saved}' is not valid JSON; prepare '{src}' again") from None
    settings = {**{"flow": manifest_flow, "resize": manifest_resize}, **settings}
    settings.pop("format", None)
    return settings if storage == "rawframes" else {**settings, "format": storage}


def _convert(src: FrameStore, dst: FrameStore, key: str, frames: int, flows: int, tmp: Path) -> str | None:
    """Store one video in ``dst``; None, or the sentence saying why it could not be read."""
    final = dst.location(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        if dst.format == "packed":
            pack_folder(src.location(key), frames, flows, final)
            return None
        shutil.rmtree(tmp, ignore_errors=True)
        unpack(src.location(key), tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except StfnError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        return str(e)
    return None


def _count_files(store: FrameStore, videos: dict[str, dict[str, Any]]) -> int:
    if store.format == "packed":
        return len(videos)
    return sum(int(v["frames"]) + 2 * int(v.get("flows") or 0) for v in videos.values())


def repack(prepared: str | os.PathLike, out_dir: str | os.PathLike, storage: str, *, workers: int = 4,
           progress: bool = True) -> RepackSummary:
    """Store the prepared folder ``prepared`` again as ``storage`` (``packed`` or ``rawframes``) in ``out_dir``."""
    if storage not in FORMATS:
        raise ParameterError("storage", f"must be one of {', '.join(FORMATS)}, got '{storage}'")
    if workers < 1:
        raise ParameterError("workers", f"must be 1 or more, got {workers}")
    src_root, out = Path(prepared), Path(out_dir)
    manifest = load_prepared_manifest(src_root)
    if manifest.format == storage:
        raise StfnError(f"'{src_root}' is already stored as {storage}")
    if out.resolve() == src_root.resolve() or out.resolve().is_relative_to(src_root.resolve()):
        raise StfnError(f"the output folder '{out}' must be outside '{src_root}'")
    check_writable(out, "output folder", folder=True)
    settings = _settings(src_root, manifest.flow, manifest.resize, storage)
    src, dst = open_store(src_root, manifest.format), open_store(out, storage)
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    ok = manifest.ok()
    with shard_lock(state, "-repack"):
        save_settings(state / "settings.json", settings, out)
        todo = [k for k, v in ok.items() if not dst.complete(k, int(v["frames"]), int(v.get("flows") or 0))]
        failures = _convert_all(src, dst, ok, todo, state / "tmp-repack", workers, progress)
        records = {k: dict(v) for k, v in manifest.videos.items()}
        for key, error in failures:
            records[key].update(status="failed", frames=0, flows=0, error=error)
        _copy_journals(src_root / STATE_DIR, state, dict(failures))
        atomic_write_json(out / "manifest.json", manifest_dict(settings, records))
        write_lists(out)
    return RepackSummary(str(out), storage, len(ok), len(ok) - len(todo), len(todo) - len(failures), failures,
                         _count_files(src, ok), _count_files(dst, {k: ok[k] for k in ok if k not in dict(failures)}))


def _convert_all(src: FrameStore, dst: FrameStore, ok: dict[str, dict[str, Any]], todo: list[str], tmp_root: Path,
                 workers: int, progress: bool) -> list[tuple[str, str]]:
    """Convert the videos ``todo`` on ``workers`` threads (file I/O releases the GIL); the failures."""
    shutil.rmtree(tmp_root, ignore_errors=True)
    tmp_root.mkdir(parents=True)
    failures = []
    with tqdm(total=len(todo), desc="repack", unit="video", disable=not progress or not todo, file=sys.stderr) as bar, \
            ThreadPoolExecutor(workers) as pool:
        jobs = {k: pool.submit(_convert, src, dst, k, int(ok[k]["frames"]), int(ok[k].get("flows") or 0),
                               tmp_root / f"{i:07d}") for i, k in enumerate(todo)}
        for key, job in jobs.items():
            try:
                error = job.result()
            except OSError as e:
                raise StfnError(f"cannot write '{e.filename or dst.location(key)}': {e.strerror or e}") from None
            if error:
                failures.append((key, error))
            bar.update(1)
    shutil.rmtree(tmp_root, ignore_errors=True)
    return failures


def _copy_journals(src_state: Path, state: Path, failed: dict[str, str]) -> None:
    """The source's journals, less the videos that could not be converted (``stfn prepare`` into the
    output then skips what is there and prepares those again from their source videos)."""
    for journal in sorted(src_state.glob("journal*.jsonl")):
        lines = []
        for line in journal.read_text(errors="replace").splitlines():
            try:
                keep = json.loads(line).get("key") not in failed
            except (ValueError, AttributeError):
                keep = False  # a line cut short by a kill of the run that wrote it
            if keep:
                lines.append(line + "\n")
        atomic_write_text(state / journal.name, "".join(lines))
