"""Kinetics-400/600/700 annotations: the official CSV files, read as they are.

Columns (the header line names them, in any order): ``label,youtube_id,time_start,time_end,split``, plus
``is_cc`` in some releases (Kinetics-600/700-2020); ``test.csv`` may have no ``label`` column. The files
are read with the :mod:`csv` module, so a quoted label with commas or quotes in it (``"passing American
football (in game)"``, or a doubled quote) is one field; a UTF-8 byte-order mark and CRLF line ends are fine.
A missing column, a row with more or fewer fields than the header (an unquoted comma in a label), a bad
time or a clip listed twice with two labels raises :class:`~stfn.data.split_files.SplitError` in one
sentence naming the file and line.

Clips. The common downloaders (ActivityNet's ``Crawler/Kinetics/download.py`` and its descendants) write
``<label>/<youtube_id>_<start:06d>_<end:06d>.mp4``; some write the label with underscores for spaces,
the CVDF archives have no label folders at all (``train/<youtube_id>_<start>_<end>.mp4``). The folder is
therefore never read: a clip is its name ``<youtube_id>_<start:06d>_<end:06d>`` (a record with
``by_name``), found in whichever folder holds it, in any video container; its class comes from the CSV.
Class names are the CSV's labels as written (spaces kept), sorted, 0-based.

Splits: train = ``train.csv``, test = ``validate.csv`` (Kinetics reports its results on the validation
set; the test set's labels are not public). Clips gone from YouTube (a few percent) are simply absent
from the prepared folder: ``stfn data-info`` and ``stfn train`` count them (``data.on_missing``).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from stfn.data.split_files import SplitError, VideoRecord

__all__ = ["KINETICS", "KineticsClip", "clip_name", "kinetics_files", "load_kinetics", "read_kinetics_csv"]

KINETICS = ("kinetics400", "kinetics600", "kinetics700")
REQUIRED = ("youtube_id", "time_start", "time_end", "split")  # and "label" in a labelled file
TRAIN_NAMES = ("train.csv",)
TEST_NAMES = ("validate.csv", "val.csv")  # Kinetics-400/700 call it validate.csv, some mirrors val.csv


@dataclass(frozen=True)
class KineticsClip:
    """One CSV row: the clip's file name (no extension), its label (None in an unlabelled file), the line."""

    name: str
    label: str | None
    line: int


def clip_name(youtube_id: str, start: int, end: int) -> str:
    """The downloaders' file name of a clip without extension: ``<youtube_id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{start:06d}_{end:06d}"


def _text(path: Path) -> str:
    if not path.is_file():
        raise SplitError(f"Kinetics annotation file '{path}' does not exist")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SplitError(f"Kinetics annotation file '{path}' is not UTF-8 text (byte {e.start})") from None


def _seconds(text: str, path: Path, line: int, column: str) -> int:
    """A time column as whole seconds, as the downloaders' ``%06d`` writes it (``10``, ``10.0``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise SplitError(f"{path}, line {line}: column '{column}' must be a time in seconds >= 0, got {text!r}")
    return int(value)


def _header(reader: csv.reader, path: Path, labelled: bool | None) -> dict[str, int]:
    header = next((row for row in reader if any(field.strip() for field in row)), None)
    if header is None:
        raise SplitError(f"Kinetics annotation file '{path}' is empty (expected the header "
                         "'label,youtube_id,time_start,time_end,split')")
    columns = {name.strip(): i for i, name in enumerate(header)}
    need = REQUIRED + (("label",) if labelled else ())
    missing = [c for c in need if c not in columns]
    if missing:
        raise SplitError(f"{path}, line {reader.line_num}: the header has no column '{missing[0]}' (expected "
                         f"'label,youtube_id,time_start,time_end,split', is_cc optional), got {','.join(header)!r}")
    return columns


def read_kinetics_csv(path: str | Path, labelled: bool | None = True) -> list[KineticsClip]:
    """The clips of one Kinetics CSV file in file order.

    ``labelled``: True needs a ``label`` column (train, validate), False ignores it, None reads it when
    there is one (``test.csv``, unlabelled in most releases). A clip listed twice with the same label is
    kept once; with two labels it is refused.
    """
    path = Path(path)
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    columns = _header(reader, path, labelled)
    use_label = "label" in columns and labelled is not False
    clips: list[KineticsClip] = []
    seen: dict[str, KineticsClip] = {}
    for row in reader:
        line = reader.line_num
        if not any(field.strip() for field in row):
            continue
        if len(row) != len(columns):
            hint = " (a label with a comma must be in double quotes)" if len(row) > len(columns) else ""
            raise SplitError(f"{path}, line {line}: expected {len(columns)} fields as the header has, "
                             f"got {len(row)}{hint}")
        ytid = row[columns["youtube_id"]].strip()
        if not ytid or any(c in ytid for c in "/\\ "):
            raise SplitError(f"{path}, line {line}: column 'youtube_id' must be a YouTube id, got {ytid!r}")
        start, end = (_seconds(row[columns[c]], path, line, c) for c in ("time_start", "time_end"))
        label = row[columns["label"]].strip() if use_label else None
        if use_label and not label:
            raise SplitError(f"{path}, line {line}: column 'label' is empty")
        clip = KineticsClip(clip_name(ytid, start, end), label, line)
        if clip.name in seen:
            if seen[clip.name].label != label:
                raise SplitError(f"{path}, line {line}: clip '{clip.name}' is already listed on line "
                                 f"{seen[clip.name].line} with label '{seen[clip.name].label}'")
            continue
        seen[clip.name] = clip
        clips.append(clip)
    return clips


def _find(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise SplitError(f"Kinetics annotation folder '{folder}' has no {what} file ({' or '.join(names)})")


def kinetics_files(folder: str | Path) -> tuple[Path, Path]:
    """``(train.csv, validate.csv)`` of a Kinetics annotation folder (``val.csv`` also counts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SplitError(f"Kinetics annotation folder '{folder}' does not exist")
    return _find(folder, TRAIN_NAMES, "training"), _find(folder, TEST_NAMES, "validation")


def load_kinetics(folder: str | Path) -> tuple[list[str], list[VideoRecord], list[VideoRecord], dict[str, list[str]]]:
    """``(classes, train, test, files read)``: train from ``train.csv``, test from ``validate.csv``.

    The classes are the labels of both files, sorted; the records are ``by_name`` (module docstring).
    """
    train_file, test_file = kinetics_files(folder)
    sides = {"train": read_kinetics_csv(train_file), "test": read_kinetics_csv(test_file)}
    classes = sorted({c.label for side in sides.values() for c in side if c.label is not None})
    if not classes:
        raise SplitError(f"Kinetics annotation files '{train_file}' and '{test_file}' list no clips")
    index = {c: i for i, c in enumerate(classes)}
    train, test = ([VideoRecord(c.name, index[c.label], by_name=True) for c in sides[s]] for s in ("train", "test"))
    return classes, train, test, {"train": [str(train_file)], "test": [str(test_file)]}
