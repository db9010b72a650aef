"""Tiny CPU helpers for the engine tests: an in-memory video dataset that follows the dataset contract
(docs/interfaces.md, "Samples and batches") and a small config for the real ``build_model``
(``cnn_small`` backbone, 32 px frames)."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stfn.config import Config
from stfn.engine import evaluate, train

COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])


class FakeVideos(Dataset):
    """``n`` videos of ``classes`` classes: the class is the frame colour (RGB) and the flow
    direction (flow); the training items add seeded noise (a "random augmentation").

    Items follow the contract: train ``rgb (T, 3, S, S)``, test ``rgb (V, T, 3, S, S)`` (views are
    shifted copies); ``flow`` likewise with ``2L`` channels; ``label``, ``index``, ``video``.
    """

    def __init__(self, subset: str, ids: list[int], streams: list[str], flow_length: int, frames: int = 4,
                 size: int = 32, classes: int = 4, views: int = 1, split: int = 1) -> None:
        self.subset, self.streams, self.L, self.T, self.S = subset, streams, flow_length, frames, size
        self.views = views
        self.classes = [f"class{c}" for c in range(classes)]
        self.labels = [i % classes for i in ids]
        self.videos = [f"class{i % classes}/v_{i:03d}" for i in ids]
        self.identity = {"dataset": "fake", "split": split, "subset": subset}

    def __len__(self) -> int:
        return len(self.videos)

    def _clip(self, index: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        label = self.labels[index]
        out = {}
        if "rgb" in self.streams:
            base = COLOURS[label % len(COLOURS)].view(1, 3, 1, 1).expand(self.T, 3, self.S, self.S)
            out["rgb"] = base + 0.8 * torch.randn(self.T, 3, self.S, self.S, generator=g)
        if "flow" in self.streams:
            angle = 2 * np.pi * label / len(self.classes)
            xy = torch.tensor([np.cos(angle), np.sin(angle)] * self.L, dtype=torch.float32).view(1, -1, 1, 1)
            out["flow"] = xy.expand(self.T, 2 * self.L, self.S, self.S) + 0.8 * torch.randn(
                self.T, 2 * self.L, self.S, self.S, generator=g)
        return out

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        train = self.subset == "train"
        g = torch.Generator().manual_seed(seed if (train and seed is not None) else zlib.crc32(self.videos[index].encode()))
        clip = self._clip(index, g)
        if not train:
            clip = {k: torch.stack([v.roll(j, dims=-1) for j in range(self.views)]) for k, v in clip.items()}
        return {**clip, "label": self.labels[index], "index": index, "video": self.videos[index]}


def tiny_config(streams: list[str] | None = None, **train: Any) -> Config:
    """A two-stream STFN (cnn_small, hidden 16, one block) on 4 frames of 32 px; fast on one core."""
    cfg = Config(name="test")
    cfg.model.streams = streams or ["rgb", "flow"]
    cfg.model.backbone = "cnn_small"
    cfg.model.flow_length = 2
    cfg.model.num_classes = 4
    cfg.model.head.hidden_dim = 16
    cfg.model.head.blocks = 1
    cfg.model.head.dropout = 0.0
    cfg.data.frames = 4
    cfg.data.num_workers = 0
    cfg.data.crop_size = 32
    cfg.data.scale_size = 32
    cfg.train.epochs = 3
    cfg.train.batch_size = 4
    cfg.train.optimizer = "adamw"
    cfg.train.lr = 3e-3
    cfg.train.weight_decay = 0.0
    cfg.train.amp = "none"
    cfg.train.channels_last = False
    cfg.train.log_every = 1
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def use_fake_data(monkeypatch: Any, builder: Any) -> None:
    """Make training and evaluation read ``builder``'s datasets (``stfn.data.features.build_run_dataset``
    as bound in the engine's modules)."""
    monkeypatch.setattr(train, "build_run_dataset", builder)
    monkeypatch.setattr(evaluate, "build_run_dataset", builder)


def fake_builder(n_train: int = 16, n_test: int = 8, classes: int = 4):
    """A replacement for ``stfn.data.features.build_run_dataset`` serving :class:`FakeVideos`.

    Videos ``0 .. n_train + n_test - 1``; split ``s`` tests on the ``s``-th window of ``n_test`` of them
    and trains on the rest, so (as in UCF101) a split-1 model tested on split 2 overlaps its training
    videos."""

    def build(cfg: Config, subset: str, views: int | None = None) -> FakeVideos:
        split = cfg.data.split
        window = set(range((split - 1) * n_test, split * n_test))
        ids = [i for i in range(n_train + n_test) if (i in window) == (subset == "test")]
        v = (views or cfg.data.test_crops) if subset == "test" else 1
        return FakeVideos(subset, ids, cfg.model.streams, cfg.model.flow_length, cfg.data.frames,
                          cfg.data.crop_size, classes, views=v, split=split)

    return build
