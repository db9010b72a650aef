"""Splits: which videos are in the train and test sets, and with which label.

Every parser returns :class:`VideoRecord` lists whose ``key`` is the video's canonical manifest key
(:func:`stfn.data.prepare.manifest.canonical_key`: its path relative to the video root, without extension,
``/`` separators), so splits from any source are joined with the ``stfn prepare`` manifest and
compared with each other by key. Labels are 0-based.

Formats (``load_split`` picks one by dataset name):

- ``ucf101`` / ``synthetic``: ``classInd.txt`` (``1 ApplyEyeMakeup``), ``trainlist0N.txt``
  (``ApplyEyeMakeup/v_..._g08_c01.avi 1``, 1-based label), ``testlist0N.txt`` (path only; the label
  comes from the class folder). CRLF or LF line ends.
- ``hmdb51``: ``<class>_test_split<N>.txt`` with lines ``<name>.avi <tag>``, tag 1 = train, 2 = test,
  0 = unused; keys are ``<class>/<name>``; classes are the file-name classes, sorted.
- ``list``: MMAction2 lists, ``frame_dir total_frames label`` (rawframes) or ``path label``
  (videos), 0-based labels; class names from ``class_names`` (one per line) or the label numbers.
- ``folder``: ``<DIR>/train/<class>/.../<video>`` and ``<DIR>/test/<class>/...`` (``val`` counts as
  test); ``DIR`` is the video tree or, with no video files, the manifest keys of the prepared folder.
- ``kinetics400`` / ``kinetics600`` / ``kinetics700``: the official CSV files, train = ``train.csv``,
  test = ``validate.csv`` (:mod:`stfn.data.kinetics`).
- ``ssv2``: Something-Something v2's JSON files, train = train, test = validation (:mod:`stfn.data.ssv2`).

Kinetics and SSv2 records are ``by_name``: the key is the clip's file name, which
:func:`check_prepared` finds in whichever folder of the prepared tree holds it.

The line parsers of each format, :class:`VideoRecord` and :class:`SplitError` are in
:mod:`stfn.data.split_files`; a malformed
line raises :class:`SplitError` naming the file and the 1-based line number.
``check_prepared`` joins the records with the ``stfn prepare`` manifest (:mod:`stfn.data.prepare.manifest`);
both are torch-free, so ``stfn data-info`` stays quick.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from stfn.data.clip_lists import index_by_name
from stfn.data.kinetics import KINETICS, load_kinetics
from stfn.data.prepare.manifest import VIDEO_EXTENSIONS, canonical_key, load_prepared_manifest
from stfn.data.split_files import (
    HMDB_FILE,
    SplitError,
    VideoRecord,
    parse_class_ind,
    parse_class_names,
    parse_hmdb51,
    parse_mmaction_list,
    parse_ucf101_list,
)
from stfn.data.ssv2 import SSV2, load_ssv2

__all__ = [
    "DATASETS",
    "DATASET_HELP",
    "SINGLE_SPLIT",
    "Split",
    "available_splits",
    "check_prepared",
    "dataset_lines",
    "group_of",
    "load_split",
]

#: Every dataset name ``data.dataset`` / ``--dataset`` takes, with one line on its files
#: (``stfn compare --dataset list`` and ``stfn data-info --dataset help`` print them).
DATASET_HELP = {
    "ucf101": "UCF101 ucfTrainTestlist: classInd.txt, trainlist0N.txt, testlist0N.txt (splits 1-3)",
    "hmdb51": "HMDB51 testTrainMulti_7030_splits: <class>_test_split<N>.txt, tags 1 train / 2 test (splits 1-3)",
    "list": "MMAction2 list files (data.train_list / data.test_list: 'frame_dir frames label' or 'path label')",
    "folder": "a train/<class>/ and test/<class>/ video tree (val/ counts as test)",
    "synthetic": "the synthetic benchmark of `stfn synth` (UCF101 format)",
    "kinetics400": "Kinetics-400 CSV files: train.csv (train), validate.csv (test); clips <youtube_id>_<start>_<end>",
    "kinetics600": "Kinetics-600 CSV files: train.csv (train), validate.csv (test); clips <youtube_id>_<start>_<end>",
    "kinetics700": "Kinetics-700 CSV files: train.csv (train), validate.csv (test); clips <youtube_id>_<start>_<end>",
    "ssv2": "Something-Something v2 JSON files: labels, train (train), validation (test); videos <id>.webm",
}
DATASETS = tuple(DATASET_HELP)
SINGLE_SPLIT = ("list", "folder", *KINETICS, SSV2)  # one split, numbered 1
_GROUP = re.compile(r"_g(\d+)_")  # UCF101's v_<Class>_g08_c01: group 08 (one actor or setting)


def group_of(key: str) -> str | None:
    """The group a video's name carries by UCF101's convention (``v_ApplyEyeMakeup_g08_c01`` -> ``"g08"``,
    numbers compared as integers: ``g8`` is ``g08``), or None for a name without one."""
    m = _GROUP.search(key.rsplit("/", 1)[-1] + "_")
    return f"g{int(m[1]):02d}" if m else None


@dataclass
class Split:
    """Train and test records of one split, the class names, and the files they came from."""

    dataset: str
    split: int
    classes: list[str]
    train: list[VideoRecord]
    test: list[VideoRecord]
    sources: dict[str, list[str]] = field(default_factory=dict)  # subset -> files read

    def records(self, subset: str) -> list[VideoRecord]:
        if subset not in ("train", "test"):
            raise SplitError(f"subset must be 'train' or 'test', got '{subset}'")
        return self.train if subset == "train" else self.test

    def overlap(self) -> list[str]:
        """Keys listed on both sides (empty for the official splits)."""
        test = {r.key for r in self.test}
        return sorted({r.key for r in self.train if r.key in test})

    def shared_groups(self) -> list[dict[str, str]]:
        """Groups (:func:`group_of`: an actor or setting, UCF101's ``_gNN_``) that have videos on both
        sides: ``[{"group", "train": an example key, "test": an example key}]``, sorted by group; empty
        for the official UCF101 splits, which keep each group on one side (leave groups out). Names
        without a group are not compared."""
        train, test = _first_key_per_group(self.train), _first_key_per_group(self.test)
        return [{"group": g, "train": train[g], "test": test[g]} for g in sorted(train.keys() & test.keys())]

    @property
    def identity(self) -> dict:
        """Dataset name, split number, class count and the sha256 of each side's canonical list.

        The checksum is over ``"<key> <label>\\n"`` lines sorted by key, so it depends on which videos
        and labels a side holds, not on line endings, file order or list format.
        """
        return {
            "dataset": self.dataset,
            "split": self.split,
            "num_classes": len(self.classes),
            "train_list_sha256": _records_sha256(self.train),
            "test_list_sha256": _records_sha256(self.test),
        }


def _first_key_per_group(records: list[VideoRecord]) -> dict[str, str]:
    """``{group: the first key in sorted order}`` of the records whose names carry a group."""
    first: dict[str, str] = {}
    for key in sorted(r.key for r in records):
        group = group_of(key)
        if group is not None:
            first.setdefault(group, key)
    return first


def _records_sha256(records: list[VideoRecord]) -> str:
    text = "".join(f"{r.key} {r.label}\n" for r in sorted(records, key=lambda r: r.key))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _folder_keys(folder: Path) -> list[str]:
    """Video keys under a video tree (files with a video extension), or under a prepared folder."""
    keys = [canonical_key(p.relative_to(folder).as_posix()) for p in folder.rglob("*")
            if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()]
    if keys:
        return sorted(keys)
    return sorted(load_prepared_manifest(folder).videos)


def _resolve(rec: VideoRecord, videos: dict[str, dict], names: dict) -> str:
    """The manifest key of a ``by_name`` record: its name in whichever folder holds it (``names``: the
    :func:`index_by_name` of the manifest keys, built on first use)."""
    if not names:
        names["index"], names["twice"] = index_by_name(videos)
    if rec.key in names["twice"]:
        first, second = names["twice"][rec.key][:2]
        raise SplitError(f"video '{rec.key}' is in the prepared folder twice, as '{first}' and '{second}': "
                         "keep one of them")
    return names["index"].get(rec.key, rec.key)


def check_prepared(records: list[VideoRecord], videos: dict[str, dict]) -> tuple[list[VideoRecord], list[str], list[str]]:
    """Split ``records`` by the manifest's ``videos``: (usable, missing keys, failed keys).

    A ``by_name`` record (Kinetics, SSv2) is looked up by its name in any folder; the usable record and
    a failed key carry the manifest key it was found under, a missing one its name.
    """
    ok, missing, failed = [], [], []
    names: dict = {}
    for rec in records:
        key = rec.key
        if rec.by_name and key not in videos:
            key = _resolve(rec, videos, names)
        info = videos.get(key)
        if info is None:
            missing.append(key)
        elif info.get("status", "ok") != "ok" or int(info.get("frames") or 0) < 1:
            failed.append(key)
        else:
            ok.append(VideoRecord(key, rec.label, rec.frames) if rec.by_name else rec)
    return ok, missing, failed


def _load_folder(folder: Path, class_names: str) -> Split:
    if not folder.is_dir():
        raise SplitError(f"folder dataset '{folder}' does not exist")
    sides: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for key in _folder_keys(folder):
        parts = key.split("/")
        subset = {"train": "train", "test": "test", "val": "test"}.get(parts[0])
        if subset is None or len(parts) < 3:
            raise SplitError(
                f"folder dataset '{folder}': video '{key}' is not under train/<class>/ or test/<class>/"
            )
        sides[subset].append((key, parts[1]))
    names = sorted({c for side in sides.values() for _, c in side})
    classes = parse_class_names(class_names) if class_names else names
    index = {c: i for i, c in enumerate(classes)}
    for _, cls in sides["train"] + sides["test"]:
        if cls not in index:
            raise SplitError(f"folder dataset '{folder}': class folder '{cls}' is not in '{class_names}'")
    train, test = ([VideoRecord(k, index[c]) for k, c in sides[s]] for s in ("train", "test"))
    if not train and not test:
        raise SplitError(f"folder dataset '{folder}' holds no videos under train/<class>/ or test/<class>/")
    return Split("folder", 1, classes, train, test, {"train": [str(folder)], "test": [str(folder)]})


def _load_list(train_list: str, test_list: str, class_names: str, split: int) -> Split:
    sides = {}
    for subset, name in (("train", train_list), ("test", test_list)):
        sides[subset] = parse_mmaction_list(name) if name else []
    if not train_list and not test_list:
        raise SplitError("dataset 'list' needs data.train_list and/or data.test_list (MMAction2 list files)")
    top = max(r.label for side in sides.values() for r in side)
    if class_names:
        classes = parse_class_names(class_names)
        if top >= len(classes):
            raise SplitError(f"a list file uses label {top} but '{class_names}' names only {len(classes)} classes")
    else:
        classes = [str(i) for i in range(top + 1)]
    sources = {"train": [train_list] if train_list else [], "test": [test_list] if test_list else []}
    return Split("list", split, classes, sides["train"], sides["test"], sources)


def available_splits(dataset: str, splits_dir: str | Path) -> list[int]:
    """Split numbers present in ``splits_dir`` (``[1]`` for the datasets of :data:`SINGLE_SPLIT`)."""
    if dataset in SINGLE_SPLIT:
        return [1]
    splits_dir = Path(splits_dir)
    if not splits_dir.is_dir():
        raise SplitError(f"split folder '{splits_dir}' does not exist")
    if dataset == "hmdb51":
        found = {int(m["split"]) for f in splits_dir.iterdir() if (m := HMDB_FILE.match(f.name))}
    else:
        found = {int(m[1]) for f in splits_dir.iterdir() if (m := re.fullmatch(r"trainlist(\d+)\.txt", f.name))}
    if not found:
        raise SplitError(f"split folder '{splits_dir}' holds no {dataset} split files")
    return sorted(found)


def load_split(dataset: str, splits: str | Path = "", split: int = 1, *, train_list: str = "",
               test_list: str = "", class_names: str = "") -> Split:
    """Read one split of ``dataset`` (one of :data:`DATASETS`).

    ``splits`` is the split folder (``ucfTrainTestlist``, ``testTrainMulti_7030_splits``, the
    synthetic ``splits/``, the Kinetics CSV or SSv2 JSON folder) or, for ``folder``, the video tree /
    prepared folder. ``train_list``,
    ``test_list`` and ``class_names`` serve the ``list`` and ``folder`` datasets.
    """
    if dataset not in DATASETS:
        raise SplitError(f"unknown dataset '{dataset}' (choose from {', '.join(DATASETS)})")
    if dataset == "list":
        return _load_list(train_list, test_list, class_names, split)
    if not splits:
        raise SplitError(f"dataset '{dataset}' needs data.splits (the folder with its split files)")
    splits = Path(splits)
    if dataset == "folder":
        return _load_folder(splits, class_names)
    if dataset in KINETICS or dataset == SSV2:
        if split != 1:
            raise SplitError(f"dataset '{dataset}' has one split (train / validation), numbered 1; got split {split}")
        classes, train, test, files = (load_ssv2 if dataset == SSV2 else load_kinetics)(splits)
        return Split(dataset, 1, classes, train, test, files)
    if not splits.is_dir():
        raise SplitError(f"split folder '{splits}' does not exist")
    if dataset == "hmdb51":
        classes, train, test, files = parse_hmdb51(splits, split)
        return Split("hmdb51", split, classes, train, test, {"train": files, "test": files})
    classes = parse_class_ind(splits / "classInd.txt")
    train_file, test_file = splits / f"trainlist{split:02d}.txt", splits / f"testlist{split:02d}.txt"
    if not train_file.is_file():
        have = ", ".join(str(s) for s in available_splits(dataset, splits)) or "none"
        raise SplitError(f"split {split} does not exist in '{splits}' (no {train_file.name}; splits there: {have})")
    train = parse_ucf101_list(train_file, classes, labelled=True)
    test = parse_ucf101_list(test_file, classes, labelled=False)
    return Split(dataset, split, classes, train, test, {"train": [str(train_file)], "test": [str(test_file)]})


def dataset_lines(names: list[str] | tuple[str, ...] = DATASETS) -> str:
    """Dataset ``names`` (default: all), one line each with what their split files are (:data:`DATASET_HELP`)."""
    width = max(len(name) for name in names)
    return "\n".join(f"{name:<{width}}  {DATASET_HELP[name]}" for name in names)
