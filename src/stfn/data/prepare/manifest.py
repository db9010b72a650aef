"""The ``stfn prepare`` manifest, and which files are videos and what their keys are.

A prepared folder holds ``manifest.json`` (or ``manifest-shard{I}of{N}.json`` per shard;
:func:`load_manifest` merges them)::

    {"version": 1, "flow": {"algorithm", options, "bound"}, "resize": {"short_side": S} | {"size": [W, H]} | {},
     "format": "rawframes" | "packed" (absent: rawframes), "videos": {key: {"source", "status": "ok" | "failed", "frames", "flows", "width", "height", "fps", "error"}}}

and list files (``rawframes.txt``: ``<key> <n_frames>``; ``rawframes_flow.txt``: ``<key> <n_flows>``: the
MMAction2 rawframe format without its label column). MMAction2 splits these lines on whitespace, so a
key with a space in it would break the whole list there: such videos are left out of the list files
(:func:`write_lists` returns them and ``stfn prepare`` warns), and stay in the manifest, which stfn reads.
A video's key is its path relative to the video root without extension, ``/`` separators:
:func:`find_videos` gives the keys of the files it finds, :func:`canonical_key` the key of a path in a
split list.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from stfn.data.video.flow import DEFAULT_BOUND
from stfn.errors import StfnError
from stfn.fileio import atomic_write_text

__all__ = [
    "MANIFEST_VERSION",
    "VIDEO_EXTENSIONS",
    "Manifest",
    "canonical_key",
    "find_videos",
    "load_manifest",
    "load_prepared_manifest",
    "manifest_dict",
    "write_lists",
]

MANIFEST_VERSION = 1
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")
_RECORD_FIELDS = ("source", "status", "frames", "flows", "width", "height", "fps", "error")


@dataclass
class Manifest:
    """The merged manifest of a prepared folder. ``videos[key]`` holds ``source``, ``status``
    (``ok``/``failed``), ``frames``, ``flows``, ``width``, ``height``, ``fps``, ``error``."""

    root: Path
    videos: dict[str, dict[str, Any]]
    flow: dict[str, Any]
    resize: dict[str, Any]
    format: str = "rawframes"  # how the images are stored: rawframes | packed (stfn.data.prepare.packed)

    @property
    def flow_bound(self) -> float:
        return float(self.flow.get("bound", DEFAULT_BOUND))

    def ok(self) -> dict[str, dict[str, Any]]:
        """The videos that were prepared successfully."""
        return {k: v for k, v in self.videos.items() if v["status"] == "ok"}


def canonical_key(path: str) -> str:
    """``"./Class\\\\v_x.avi"`` -> ``"Class/v_x"``: relative, ``/`` separators, no video extension.

    Returns ``""`` for a path that cannot be a key (empty, absolute, or with ``..``).
    """
    text = path.strip().replace("\\", "/")
    parts = [s for s in text.split("/") if s not in (".", "")]
    if text.startswith("/") or ".." in parts or not parts:
        return ""
    key = "/".join(parts)
    suffix = PurePosixPath(key).suffix
    if suffix.lower() in VIDEO_EXTENSIONS:
        key = key[: -len(suffix)]
    return key


def _listed(src: Path, list_file: str | os.PathLike) -> list[str]:
    """The paths ``list_file`` lists, all of which must be files under ``src``: a whole line when it names
    a file under ``src`` (a path with spaces, as Kinetics' label folders have), else its first column
    (MMAction2 lists: ``path label``)."""
    lf = Path(list_file)
    if not lf.is_file():
        raise StfnError(f"list file '{lf}' does not exist")
    lines = [ln.strip() for ln in lf.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    rels = [ln if (src / ln).is_file() else ln.split()[0] for ln in lines]
    missing = [r for r in rels if not (src / r).is_file()]
    if missing:
        raise StfnError(
            f"{len(missing)} of the {len(rels)} videos listed in '{lf}' are not under '{src}', "
            f"e.g. '{missing[0]}'"
        )
    return rels


def _walk(src: Path, exts: tuple[str, ...], exclude: str | os.PathLike | None) -> list[str]:
    """Files with one of ``exts`` under ``src``, relative, skipping hidden names and ``exclude``."""
    skip = Path(exclude).resolve() if exclude is not None else None
    rels: list[str] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (Path(dirpath, d).resolve() != skip)
        )
        base = Path(dirpath).relative_to(src)
        rels += [(base / f).as_posix() for f in filenames if not f.startswith(".") and f.lower().endswith(exts)]
    return rels


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
    rels = _listed(src, list_file) if list_file is not None else _walk(src, exts, exclude)
    by_key: dict[str, str] = {}
    for rel in rels:
        key = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
        if key in by_key and by_key[key] != rel:
            raise StfnError(f"videos '{by_key[key]}' and '{rel}' would share the output folder '{key}'")
        by_key[key] = rel
    if not by_key:
        raise StfnError(f"no video files ({', '.join(exts)}) under '{src}'")
    return src, sorted(by_key.items())


def manifest_dict(settings: dict[str, Any], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The manifest of one shard: ``settings`` (``flow``, ``resize``, ``format``) and the records of its videos."""
    videos = {k: {f: records[k].get(f) for f in _RECORD_FIELDS} for k in sorted(records)}
    return {"version": MANIFEST_VERSION, "flow": settings["flow"], "resize": settings["resize"],
            "format": settings.get("format", "rawframes"), "videos": videos}


def load_manifest(root: str | os.PathLike) -> Manifest:
    """Read and merge ``root/manifest.json`` and every ``root/manifest-shard*of*.json``."""
    root = Path(root)
    paths = sorted(root.glob("manifest.json")) + sorted(root.glob("manifest-shard*of*.json"))
    if not paths:
        raise StfnError(f"no manifest.json in '{root}': prepare it first with `stfn prepare VIDEO_ROOT {root}`")
    videos: dict[str, dict[str, Any]] = {}
    flow = resize = fmt = None
    for p in paths:
        try:
            data = json.loads(p.read_text())
            f, r, vids, storage = data["flow"], data["resize"], data["videos"], data.get("format", "rawframes")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StfnError(f"manifest '{p}' is not a valid stfn manifest") from None
        if storage not in ("rawframes", "packed"):
            raise StfnError(f"manifest '{p}' names an unknown storage format '{storage}' (rawframes or packed)")
        if flow is None:
            flow, resize, fmt = f, r, storage
        elif (f, r, storage) != (flow, resize, fmt):
            raise StfnError(f"manifest '{p}' was prepared with other flow/resize/format settings than '{paths[0]}'")
        for key, rec in vids.items():
            if key not in videos or rec.get("status") == "ok":
                videos[key] = rec
    return Manifest(root=root, videos=dict(sorted(videos.items())), flow=flow or {}, resize=resize or {},
                    format=fmt or "rawframes")


def load_prepared_manifest(root: str | os.PathLike) -> Manifest:
    """:func:`load_manifest`, with a clear error when the folder does not exist."""
    root = Path(root)
    if not root.is_dir():
        raise StfnError(f"prepared folder '{root}' does not exist")
    return load_manifest(root)


def write_lists(out: Path) -> list[str]:
    """``rawframes.txt`` (and, with flow, ``rawframes_flow.txt``) of the ok videos of ``out``'s manifest;
    returns the keys left out because they hold whitespace (see the module docstring)."""
    m = load_manifest(out)
    ok = m.ok()
    spaced = [k for k in ok if any(c.isspace() for c in k)]
    ok = {k: v for k, v in ok.items() if k not in spaced}
    atomic_write_text(out / "rawframes.txt", "".join(f"{k} {v['frames']}\n" for k, v in ok.items()))
    if m.flow.get("algorithm", "none") != "none":
        atomic_write_text(out / "rawframes_flow.txt", "".join(f"{k} {v['flows']}\n" for k, v in ok.items()))
    return spaced
