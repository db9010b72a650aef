"""Something-Something v2 annotations: the official JSON files, read as they are.

Files (in the annotation folder, with or without the ``something-something-v2-`` prefix of the first
release): ``...-labels.json``, ``{"<class>": "<index>", ...}`` (174 classes, indices as strings from 0);
``...-train.json`` and ``...-validation.json``, lists of ``{"id", "label", "template", "placeholders"}``;
``...-test.json``, ``[{"id"}, ...]`` without labels. A video's class is its ``template`` without the
brackets (``"Pushing [something] from left to right"`` -> ``"Pushing something from left to right"``), as
the official evaluation does (``label`` is the template with the objects filled in, not a class).
Videos are ``<id>.webm``; a transcoded copy in another container (``<id>.mp4``) is found the same way:
a record's key is the ``id`` (``by_name``), matched by file name in any folder of the tree.

Splits: train = train.json, test = validation.json (the test set's labels are not public). A file that is
not a JSON list, an entry without ``id``, a template that is not in the labels file, or an id listed
twice raises :class:`~stfn.data.split_files.SplitError` in one sentence naming the file and the entry
(counted from 1).

Horizontal flips. Some SSv2 classes change meaning in a mirror image ("Pushing something from left to
right" becomes "... from right to left"): TSM (``main.py``: ``get_augmentation(flip=False if 'something'
in args.dataset ...)``) trains SSv2 without flipping, and so does stfn (:data:`NO_FLIP_DATASETS`, applied
by :func:`stfn.data.transforms.build_transform`). :func:`mirror_pairs` is the swap table such a flip
would need (class -> its mirrored class), for reports and for anyone who wants to flip with swapping.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from stfn.data.split_files import SplitError, VideoRecord

__all__ = ["NO_FLIP_DATASETS", "SSV2", "load_ssv2", "mirror_pairs", "read_labels", "read_videos",
           "ssv2_files", "template_class"]

SSV2 = "ssv2"
NO_FLIP_DATASETS = (SSV2,)  # classes whose meaning a horizontal flip changes: trained without flips (TSM)
PREFIX = "something-something-v2-"
_SIDE = re.compile(r"\b(left|right)\b")


def template_class(template: str) -> str:
    """``"Pushing [something] from left to right"`` -> ``"Pushing something from left to right"``."""
    return template.replace("[", "").replace("]", "")


def _load(path: Path) -> Any:
    if not path.is_file():
        raise SplitError(f"SSv2 annotation file '{path}' does not exist")
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise SplitError(f"SSv2 annotation file '{path}' is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise SplitError(f"SSv2 annotation file '{path}' is not valid JSON (line {e.lineno}: {e.msg})") from None


def read_labels(path: str | Path) -> list[str]:
    """``something-something-v2-labels.json`` (``{"<class>": "<index>"}``) -> class names by index."""
    path = Path(path)
    data = _load(path)
    if not isinstance(data, dict) or not data:
        raise SplitError(f"SSv2 labels file '{path}' must be a JSON object of class name -> index, "
                         f"got {type(data).__name__}")
    by_index: dict[int, str] = {}
    for name, value in data.items():
        text = str(value).strip()
        if not text.isdigit():
            raise SplitError(f"SSv2 labels file '{path}': class '{name}' has index {value!r}, not a number from 0")
        if int(text) in by_index:
            raise SplitError(f"SSv2 labels file '{path}': index {text} is given to '{by_index[int(text)]}' and '{name}'")
        by_index[int(text)] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise SplitError(f"SSv2 labels file '{path}' must number its classes 0..{len(by_index) - 1} without gaps")
    return [by_index[i] for i in range(len(by_index))]


def _entry_id(entry: Any, path: Path, n: int) -> str:
    if not isinstance(entry, dict) or "id" not in entry:
        raise SplitError(f"{path}, entry {n}: expected an object with an 'id', got {str(entry)[:60]!r}")
    vid = str(entry["id"]).strip()
    if not vid or isinstance(entry["id"], (dict, list, bool)) or any(c in vid for c in "/\\"):
        raise SplitError(f"{path}, entry {n}: 'id' must be a video id such as \"78687\", got {entry['id']!r}")
    return vid


def read_videos(path: str | Path, classes: list[str] | None, labels_file: str | Path = "") -> list[VideoRecord]:
    """The videos of one SSv2 list file as ``by_name`` records (label -1 when ``classes`` is None: test).

    With ``classes``, every entry's ``template`` (brackets stripped) must be one of them.
    """
    path = Path(path)
    data = _load(path)
    if not isinstance(data, list):
        raise SplitError(f"SSv2 annotation file '{path}' must be a JSON list of videos, got {type(data).__name__}")
    index = {c: i for i, c in enumerate(classes or [])}
    records, seen = [], {}
    for n, entry in enumerate(data, 1):
        vid = _entry_id(entry, path, n)
        if vid in seen:
            raise SplitError(f"{path}, entry {n}: video '{vid}' is already listed as entry {seen[vid]}")
        seen[vid] = n
        label = -1
        if classes is not None:
            template = entry.get("template")
            if not isinstance(template, str):
                raise SplitError(f"{path}, entry {n}: video '{vid}' has no 'template' (its class)")
            label = index.get(template_class(template), -1)
            if label < 0:
                raise SplitError(f"{path}, entry {n}: template {template!r} of video '{vid}' is not a class "
                                 f"of '{labels_file}'")
        records.append(VideoRecord(vid, label, by_name=True))
    return records


def _file(folder: Path, part: str) -> Path:
    for name in (f"{PREFIX}{part}.json", f"{part}.json"):
        if (folder / name).is_file():
            return folder / name
    raise SplitError(f"SSv2 annotation folder '{folder}' has no {PREFIX}{part}.json (or {part}.json)")


def ssv2_files(folder: str | Path) -> tuple[Path, Path, Path]:
    """``(labels, train, validation)`` files of an SSv2 annotation folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SplitError(f"SSv2 annotation folder '{folder}' does not exist")
    return _file(folder, "labels"), _file(folder, "train"), _file(folder, "validation")


def load_ssv2(folder: str | Path) -> tuple[list[str], list[VideoRecord], list[VideoRecord], dict[str, list[str]]]:
    """``(classes, train, test, files read)``: the labels file's classes, train.json, validation.json."""
    labels, train_file, test_file = ssv2_files(folder)
    classes = read_labels(labels)
    train = read_videos(train_file, classes, labels)
    test = read_videos(test_file, classes, labels)
    return classes, train, test, {"train": [str(labels), str(train_file)], "test": [str(labels), str(test_file)]}


def mirror_pairs(classes: list[str]) -> dict[int, int]:
    """The classes whose mirror image is another class: ``{label: mirrored label}``, both ways, built
    from the names ("left" <-> "right": "Pushing something from left to right" <-> "... right to left",
    "Turning the camera left ..." <-> "... right ..."). A flip that keeps the labels must swap these."""
    index = {c: i for i, c in enumerate(classes)}
    pairs = {}
    for i, name in enumerate(classes):
        mirrored = _SIDE.sub(lambda m: "right" if m[1] == "left" else "left", name)
        j = index.get(mirrored)
        if mirrored != name and j is not None:
            pairs[i] = j
    return pairs
