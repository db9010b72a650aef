"""A checkpoint's data identity: is this the data set it trained on, and has it seen these test videos?

A checkpoint records its training set's ``dataset`` identity (dataset, split, class count, the sha256
of each side's list: :attr:`stfn.data.splits.Split.identity`), its ``train_videos`` and the videos its
initialisation had seen (``inherited``: :func:`stfn.engine.checkpoint.inheritance`). Evaluation,
feature extraction and a resumed training check them here, each refusal one sentence that names the
list or the videos.
"""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset

from stfn.config import Config
from stfn.data.features import build_run_dataset
from stfn.data.split_files import SplitError
from stfn.data.splits import load_split
from stfn.engine.checkpoint import CheckpointError, identity_difference, seen_videos
from stfn.errors import StfnError

__all__ = ["check_dataset", "check_overlap", "check_split_disjoint", "relocate"]


def check_overlap(ckpt: dict[str, Any], test_videos: list[str], what: str, split: int) -> None:
    """Refuse a test list that shares videos with what the checkpoint has seen: its own training list,
    and the training videos of the checkpoints it was initialised from (``inherited``)."""
    own, inherited = seen_videos(ckpt)
    test = set(test_videos)
    overlap = sorted(own & test)
    if overlap:
        raise StfnError(
            f"{what} was trained on {len(overlap)} of the {len(test_videos)} test videos of split {split} "
            f"(e.g. '{overlap[0]}'): evaluate it on the split it was trained for"
        )
    overlap = sorted(inherited & test)
    if overlap:
        sources = ", ".join(f"'{p}'" for p in (ckpt.get("inherited") or {}).get("sources") or []) or "other checkpoints"
        raise StfnError(
            f"{what} was initialised from {sources}, which trained on {len(overlap)} of the {len(test_videos)} "
            f"test videos of split {split} (e.g. '{overlap[0]}'): initialise it from checkpoints of the split "
            "it is tested on"
        )


def check_split_disjoint(cfg: Config, train_set: Dataset, test_set: Dataset | None) -> None:
    """Refuse a split whose training list holds test videos (a model trained on it cannot be scored
    honestly, and ``stfn eval`` refuses it later). Without a test set (``train.eval_every: 0``) the
    test list is read when there is one."""
    train_videos = list(getattr(train_set, "videos", []))
    if test_set is None:
        try:
            test_set = build_run_dataset(cfg, "test")
        except StfnError:  # no readable test list: nothing to leak into
            return
    test_videos = list(getattr(test_set, "videos", []))
    both = sorted(set(train_videos) & set(test_videos))
    if both:
        where = cfg.data.features or cfg.data.splits or cfg.data.train_list
        raise StfnError(
            f"split {cfg.data.split} of '{where}' lists {len(both)} of its {len(test_videos)} test videos in its "
            f"training list too (e.g. '{both[0]}'): remove them from one side (`stfn data-info` lists them)"
        )


def _split_source(cfg: Config) -> str:
    return cfg.data.features or cfg.data.splits or cfg.data.test_list or cfg.data.train_list


def check_dataset(ckpt: dict[str, Any], path: str | os.PathLike, cfg: Config, identity: dict[str, Any]) -> None:
    """Refuse data that is not the data set the checkpoint trained on: the test set's ``identity``
    (:attr:`stfn.data.splits.Split.identity`) against the checkpoint's ``dataset``, naming the list
    that differs. On another split of the same folder, the checkpoint's own split is read from it and
    its training list compared (skipped when that split's files are not there)."""
    recorded = dict(ckpt.get("dataset") or {})
    if not recorded:
        return
    split, trained_split = identity.get("split"), recorded.get("split")
    what = f"split {split} of '{_split_source(cfg)}'"
    if split is not None and trained_split is not None and int(split) != int(trained_split):
        if cfg.data.features:
            return
        d = cfg.data
        try:
            own = load_split(d.dataset, d.splits, int(trained_split), train_list=d.train_list,
                             test_list=d.test_list, class_names=d.class_names)
        except SplitError:
            return
        recorded.pop("test_list_sha256", None)  # a test split other than its own: its training list decides
        identity, what = own.identity, f"split {trained_split} of '{_split_source(cfg)}'"
    diff = identity_difference(recorded, identity)
    if diff:
        part, there, here = diff
        raise CheckpointError(f"checkpoint '{path}' was trained on another data set: the {part} of {what} differs "
                              f"from the one it was trained with ({here} there, {there} in the checkpoint)")


def relocate(cfg: Config, path: str | os.PathLike, data_root: str | os.PathLike | None,
              splits_dir: str | os.PathLike | None, features_dir: str | os.PathLike | None) -> None:
    """Point ``cfg`` at the data where it is now: ``--data`` / ``--splits`` for a checkpoint trained on
    frames, ``--features`` for one trained on cached features."""
    if cfg.data.features and (data_root or splits_dir):
        raise StfnError(f"checkpoint '{path}' was trained on cached features ('{cfg.data.features}'): it is "
                        "evaluated on them; say where they are now with --features, not --data / --splits")
    if features_dir and not cfg.data.features:
        raise StfnError(f"checkpoint '{path}' was trained on frames, not cached features: say where the data is "
                        "now with --data (the prepared folder) and --splits (the split folder)")
    if data_root:
        cfg.data.root = str(data_root)
    if splits_dir:
        cfg.data.splits = str(splits_dir)
    if features_dir:
        cfg.data.features = str(features_dir)
