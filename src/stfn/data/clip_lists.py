"""Videos found by name: the clips a Kinetics CSV or an SSv2 JSON file lists, wherever they are in a tree.

Kinetics clips (``<youtube_id>_<start:06d>_<end:06d>``) and SSv2 videos (``<id>``) are named uniquely by
their file name, so the folder that holds one (a label folder with spaces or underscores, ``train/``,
none at all) does not matter: :func:`index_by_name` maps each name to the key or path that holds it,
and ``stfn prepare --list FILE.csv|FILE.json`` prepares the listed videos that are there
(:func:`listed_videos`), counting the missing ones instead of failing on them. Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from stfn.data.kinetics import read_kinetics_csv
from stfn.data.prepare.manifest import VIDEO_EXTENSIONS, find_videos
from stfn.data.split_files import SplitError
from stfn.data.ssv2 import read_videos

__all__ = ["annotation_kind", "index_by_name", "listed_names", "listed_videos"]


def annotation_kind(path: str | os.PathLike) -> str | None:
    """``"kinetics"`` for a ``.csv`` file, ``"ssv2"`` for a ``.json`` file, None for a plain list file."""
    suffix = Path(path).suffix.lower()
    return {".csv": "kinetics", ".json": "ssv2"}.get(suffix)


def listed_names(path: str | os.PathLike) -> list[str]:
    """The video names a Kinetics CSV (labelled or not) or an SSv2 list JSON (any of train, validation,
    test) lists, in file order."""
    kind = annotation_kind(path)
    if kind == "kinetics":
        return [c.name for c in read_kinetics_csv(path, labelled=None)]
    if kind == "ssv2":
        return [r.key for r in read_videos(path, None)]
    raise SplitError(f"'{path}' is neither a Kinetics CSV (.csv) nor an SSv2 list (.json)")


def index_by_name(paths: Iterable[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``({name: path}, {name: [paths]})`` of ``/``-separated paths or keys by their last part without
    a video extension; the second dict holds the names found more than once (ambiguous)."""
    index: dict[str, str] = {}
    twice: dict[str, list[str]] = {}
    for p in paths:
        name = p.rsplit("/", 1)[-1]
        stem, dot, ext = name.rpartition(".")
        if dot and "." + ext.lower() in VIDEO_EXTENSIONS:
            name = stem
        if name in index:
            twice.setdefault(name, [index[name]]).append(p)
        index[name] = p
    return index, twice


def listed_videos(video_root: str | os.PathLike, list_file: str | os.PathLike,
                  extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> tuple[list[str], list[str]]:
    """``(relative paths of the listed videos under video_root, names of those not there)``.

    Raises :class:`SplitError` when a listed name is in the tree twice (which one to prepare?).
    """
    names = listed_names(list_file)
    _, videos = find_videos(video_root, extensions)
    index, twice = index_by_name(rel for _, rel in videos)
    found, missing = [], []
    for name in names:
        if name in twice:
            raise SplitError(f"video '{name}' listed in '{list_file}' is under '{video_root}' twice: "
                             f"'{twice[name][0]}' and '{twice[name][1]}'")
        (found if name in index else missing).append(index.get(name, name))
    return found, missing
