"""The split files' line formats: UCF101's ``classInd.txt`` / ``trainlist0N.txt`` / ``testlist0N.txt``,
HMDB51's ``<class>_test_split<N>.txt``, MMAction2 lists and a class-names file, each parsed into
:class:`VideoRecord` s whose ``key`` is the video's canonical manifest key and whose label is 0-based
(:mod:`stfn.data.splits` puts them together into a :class:`~stfn.data.splits.Split`). A malformed line
raises :class:`SplitError` naming the file and the 1-based line number. Torch-free."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from stfn.data.prepare.manifest import canonical_key
from stfn.errors import StfnError

__all__ = ["HMDB_FILE", "SplitError", "VideoRecord", "parse_class_ind", "parse_class_names", "parse_hmdb51",
           "parse_mmaction_list", "parse_ucf101_list"]

HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>\d+)\.txt$")


class SplitError(StfnError, ValueError):
    """A split or list file is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class VideoRecord:
    """One listed video: canonical ``key``, 0-based ``label``, and its frame count if the list gives one.

    ``by_name``: the key is the video's file name without extension (a Kinetics clip
    ``<youtube_id>_<start>_<end>``, an SSv2 ``<id>``), found in whichever folder of the tree holds it
    (:func:`stfn.data.splits.check_prepared` resolves it to the manifest key)."""

    key: str
    label: int
    frames: int | None = None
    by_name: bool = False


def _read_lines(path: Path) -> list[str]:
    """Lines of a text file without line ends (CRLF or LF); errors name the file."""
    if not path.is_file():
        raise SplitError(f"split file '{path}' does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SplitError(f"split file '{path}' is not UTF-8 text (byte {e.start})") from None
    return text.splitlines()


def _bad(path: Path, lineno: int, line: str, expected: str) -> SplitError:
    shown = line if len(line) <= 80 else line[:77] + "..."
    return SplitError(f"{path}, line {lineno}: expected {expected}, got {shown!r}")


def _int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else None


def _check_unique(records: list[VideoRecord], lines: list[int], path: Path) -> None:
    seen: dict[str, int] = {}
    for rec, lineno in zip(records, lines, strict=True):
        if rec.key in seen:
            raise SplitError(f"{path}, line {lineno}: video '{rec.key}' is already listed on line {seen[rec.key]}")
        seen[rec.key] = lineno


def parse_class_ind(path: str | Path) -> list[str]:
    """UCF101 ``classInd.txt`` (``<index> <name>``, indices 1..K in any order) -> names by 0-based label."""
    path = Path(path)
    by_index: dict[int, str] = {}
    for lineno, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split()
        idx = _int(parts[0]) if len(parts) == 2 else None
        if idx is None or idx < 1:
            raise _bad(path, lineno, line, "'<index from 1> <class name>'")
        if idx in by_index:
            raise SplitError(f"{path}, line {lineno}: class index {idx} is listed twice")
        by_index[idx] = parts[1]
    if not by_index:
        raise SplitError(f"class file '{path}' lists no classes")
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise SplitError(f"class file '{path}' must number its classes 1..{len(by_index)} without gaps")
    if len(set(by_index.values())) != len(by_index):
        raise SplitError(f"class file '{path}' lists a class name twice")
    return [by_index[i] for i in range(1, len(by_index) + 1)]


def parse_class_names(path: str | Path) -> list[str]:
    """A class-names file: one name per line, line i (from 0) is label i; blank lines are ignored."""
    path = Path(path)
    names = [line.strip() for line in _read_lines(path) if line.strip()]
    if not names:
        raise SplitError(f"class-names file '{path}' lists no classes")
    if len(set(names)) != len(names):
        raise SplitError(f"class-names file '{path}' lists a class name twice")
    return names


def parse_ucf101_list(path: str | Path, classes: list[str], labelled: bool) -> list[VideoRecord]:
    """A UCF101 ``trainlist`` (``labelled=True``: ``<Class>/<file> <label from 1>``) or ``testlist``.

    The class folder of every path must be in ``classes`` and agree with the label when one is given.
    """
    path = Path(path)
    index = {name: i for i, name in enumerate(classes)}
    records, linenos = [], []
    expected = "'<Class>/<video> <label from 1>'" if labelled else "'<Class>/<video>'"
    for lineno, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != (2 if labelled else 1) or "/" not in parts[0].replace("\\", "/"):
            raise _bad(path, lineno, line, expected)
        key = canonical_key(parts[0])
        if not key:
            raise _bad(path, lineno, line, "a relative path " + expected)
        folder = key.split("/")[0]
        if folder not in index:
            raise SplitError(f"{path}, line {lineno}: class folder '{folder}' is not in the class list")
        label = index[folder]
        if labelled:
            given = _int(parts[1])
            if given is None or not 1 <= given <= len(classes):
                raise _bad(path, lineno, line, f"a label from 1 to {len(classes)} after the path")
            if given - 1 != label:
                raise SplitError(
                    f"{path}, line {lineno}: label {given} is class '{classes[given - 1]}' "
                    f"but the video is in folder '{folder}'"
                )
        records.append(VideoRecord(key, label))
        linenos.append(lineno)
    _check_unique(records, linenos, path)
    return records


def parse_hmdb51(splits_dir: str | Path, split: int) -> tuple[list[str], list[VideoRecord], list[VideoRecord], list[str]]:
    """HMDB51 ``testTrainMulti_7030_splits``: (classes, train, test, files read) for one split."""
    splits_dir = Path(splits_dir)
    files = sorted(splits_dir.glob(f"*_test_split{split}.txt"))
    if not files:
        raise SplitError(f"no HMDB51 split files '*_test_split{split}.txt' in '{splits_dir}'")
    classes = sorted(HMDB_FILE.match(f.name)["cls"] for f in files)
    by_class = {HMDB_FILE.match(f.name)["cls"]: f for f in files}
    train, test, train_lines, test_lines = [], [], [], []
    for label, name in enumerate(classes):
        path = by_class[name]
        for lineno, line in enumerate(_read_lines(path), 1):
            if not line.strip():
                continue
            parts = line.split()
            tag = _int(parts[1]) if len(parts) == 2 else None
            if tag not in (0, 1, 2):
                raise _bad(path, lineno, line, "'<video> <0|1|2>' (0 unused, 1 train, 2 test)")
            if tag == 0:
                continue
            rec = VideoRecord(f"{name}/{canonical_key(parts[0])}", label)
            (train if tag == 1 else test).append(rec)
            (train_lines if tag == 1 else test_lines).append((path, lineno))
    for recs, where in ((train, train_lines), (test, test_lines)):
        seen: dict[str, tuple[Path, int]] = {}
        for rec, (path, lineno) in zip(recs, where, strict=True):
            if rec.key in seen:
                raise SplitError(f"{path}, line {lineno}: video '{rec.key}' is listed twice")
            seen[rec.key] = (path, lineno)
    return classes, train, test, [str(f) for f in sorted(files)]


def parse_mmaction_list(path: str | Path) -> list[VideoRecord]:
    """An MMAction2 list: ``frame_dir total_frames label`` or ``path label`` (0-based labels).

    The format is fixed by the first non-blank line; every line must follow it. Paths may not
    contain spaces (as in MMAction2).
    """
    path = Path(path)
    records, linenos, width = [], [], None
    for lineno, line in enumerate(_read_lines(path), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if width is None and len(parts) in (2, 3):
            width = len(parts)
        expected = "'<frame_dir> <total_frames> <label>'" if width == 3 else "'<video path> <label>'"
        if width is None or len(parts) != width:
            raise _bad(path, lineno, line, "'<frame_dir> <total_frames> <label>' or '<video path> <label>'"
                       if width is None else expected)
        label = _int(parts[-1])
        frames = _int(parts[1]) if width == 3 else None
        if label is None or label < 0 or (width == 3 and (frames is None or frames < 1)):
            raise _bad(path, lineno, line, expected + " with a label from 0" + (" and frames from 1" if width == 3 else ""))
        key = canonical_key(parts[0].rstrip("/"))
        if not key:
            raise _bad(path, lineno, line, "a relative video path or frame folder")
        records.append(VideoRecord(key, label, frames))
        linenos.append(lineno)
    if not records:
        raise SplitError(f"list file '{path}' lists no videos")
    _check_unique(records, linenos, path)
    return records
