"""Cached per-frame features as a Dataset, and the dataset a run reads (frames or cached features).

A features folder (written by :func:`stfn.engine.features.extract_features`) holds one array per
subset and stream::

    DIR/features.json          {"version", "streams", "frames", "feature_dim", "dtype", "classes",
                                "source", "source_checkpoint", "source_videos", "model", "data",
                                "subsets": {"train": {"videos", "labels", "identity"}, "test": ...}}
    DIR/{subset}_{stream}.npy  float16 (N, T, C): row i = video subsets[subset].videos[i]

Training with ``data.features=DIR`` reads :class:`FeatureDataset`: items ``rgb_feat`` / ``flow_feat``
``(T', C)`` float32 where ``T' = data.frames``; training samples one random cached position per
segment (as :mod:`stfn.data.sampling` does on frames), testing takes the segment centres.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stfn.config import Config
from stfn.data.datasets import build_dataset
from stfn.data.sampling import segment_positions
from stfn.errors import StfnError

__all__ = ["META", "FeatureDataset", "build_run_dataset", "load_features_meta"]

META = "features.json"


def load_features_meta(root: str | os.PathLike) -> dict[str, Any]:
    """``features.json`` of a features folder, with a clear error when it is not one."""
    path = Path(root) / META
    if not path.is_file():
        raise StfnError(f"'{root}' is not a features folder (no {META}; write one with `stfn extract-features`)")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise StfnError(f"'{path}' is not valid JSON ({e})") from None


def _positions(n: int, count: int, train: bool, generator: torch.Generator | None = None) -> list[int]:
    """``count`` of the ``n`` cached positions: all of them when ``count`` is 0 or at least ``n``, else
    one per equal segment (:func:`stfn.data.sampling.segment_positions`, random in training)."""
    if count <= 0 or count >= n:
        return list(range(n))
    return segment_positions(n, count, train, generator)


class FeatureDataset(Dataset):
    """Cached features of one subset: items ``{"<stream>_feat": (T', C) float32, "label", "index",
    "video"}`` for each stream in ``streams``."""

    def __init__(self, root: str | os.PathLike, subset: str, streams: list[str], frames: int, train: bool) -> None:
        self.root = Path(root)
        meta = load_features_meta(root)
        if subset not in meta.get("subsets", {}):
            raise StfnError(f"features folder '{root}' has no '{subset}' subset (it has: "
                            f"{', '.join(meta.get('subsets', {})) or 'none'})")
        missing = [s for s in streams if s not in meta["streams"]]
        if missing:
            raise StfnError(f"features folder '{root}' has no '{missing[0]}' features (it has {', '.join(meta['streams'])})")
        info = meta["subsets"][subset]
        self.meta, self.subset, self.streams = meta, subset, list(streams)
        self.frames, self.train = frames, train
        self.classes: list[str] = list(meta["classes"])
        self.videos: list[str] = list(info["videos"])
        self.labels: list[int] = list(info["labels"])
        self.identity: dict = dict(info.get("identity", {}), features=str(self.root))
        self.feature_dim: int = int(meta["feature_dim"])
        self._arrays: dict[str, np.ndarray] = {}
        for s in self.streams:
            arr = self._array(s)
            if arr.shape[0] != len(self.videos):
                raise StfnError(f"'{self.root / f'{subset}_{s}.npy'}' holds {arr.shape[0]} videos, "
                                f"{META} lists {len(self.videos)}")

    def _array(self, stream: str) -> np.ndarray:
        if stream not in self._arrays:  # opened lazily: each loader worker maps the file itself
            path = self.root / f"{self.subset}_{stream}.npy"
            if not path.is_file():
                raise StfnError(f"features file '{path}' is missing")
            self._arrays[stream] = np.load(path, mmap_mode="r")
        return self._arrays[stream]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """``item`` is an index, or ``(index, seed)`` from ``stfn.data.datasets.SeededSampler``."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        generator = torch.Generator().manual_seed(seed) if seed is not None and self.train else None
        first = self._array(self.streams[0])
        pos = _positions(first.shape[1], self.frames, self.train, generator)
        item: dict[str, Any] = {"label": self.labels[index], "index": index, "video": self.videos[index]}
        for s in self.streams:
            rows = np.asarray(self._array(s)[index], dtype=np.float32)
            item[f"{s}_feat"] = torch.from_numpy(rows[pos])
        return item


def build_run_dataset(cfg: Config, subset: str, views: int | None = None) -> Dataset:
    """The dataset training and evaluation read: cached features when ``data.features`` is set,
    else ``stfn.data.datasets.build_dataset`` (test views: ``views`` or ``data.test_crops``)."""
    if cfg.data.features:
        ds = FeatureDataset(cfg.data.features, subset, cfg.model.streams, cfg.data.frames, train=subset == "train")
        made_for = ds.identity.get("split")
        if made_for is not None and int(made_for) != cfg.data.split:
            raise StfnError(f"the features in '{cfg.data.features}' were extracted for split {made_for}, "
                            f"not split {cfg.data.split}")
        return ds
    if subset == "test" and views is None:
        views = cfg.data.test_crops
    return build_dataset(cfg.data, subset, cfg.model.streams, cfg.model.flow_length, views=views)
