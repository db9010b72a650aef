"""A tiny prepared data set with UCF101-format splits, written directly (no decoding, no flow): for the
tests of a checkpoint's data identity (eval where the data is now, leak checks, resume) and of
`stfn data-info`. Importable by name from any test folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from stfn.config import Config

CLASSES = ("Jump", "Wave")
GROUPS = (1, 2, 3)  # split N tests on group N, trains on the others (as UCF101's splits do)
SIZE, FRAMES = 32, 5


def video_key(cls: str, group: int, clip: int) -> str:
    return f"{cls}/v_{cls}_g{group:02d}_c{clip:02d}"


def _jpeg(path: Path, value: np.ndarray) -> None:
    Image.fromarray(value).save(path, format="JPEG", quality=90)


def write_tiny_prepared(root: Path, classes: tuple[str, ...] = CLASSES) -> Path:
    """``root`` as `stfn prepare` writes it: per class, 3 groups x 2 clips of 5 frames of 32x32 (a
    class-coloured square that moves right, flow fields to match), and ``manifest.json``."""
    rng = np.random.default_rng(0)
    videos = {}
    for c, cls in enumerate(classes):
        for g in GROUPS:
            for clip in (1, 2):
                key = video_key(cls, g, clip)
                folder = root / key
                folder.mkdir(parents=True, exist_ok=True)
                for k in range(FRAMES):
                    img = rng.integers(0, 40, (SIZE, SIZE, 3), dtype=np.uint8)
                    img[8:20, 4 + 2 * k : 16 + 2 * k, c % 3] = 230
                    _jpeg(folder / f"img_{k + 1:05d}.jpg", img)
                for k in range(FRAMES - 1):
                    _jpeg(folder / f"flow_x_{k + 1:05d}.jpg", np.full((SIZE, SIZE), 140 + 20 * c, np.uint8))
                    _jpeg(folder / f"flow_y_{k + 1:05d}.jpg", np.full((SIZE, SIZE), 128, np.uint8))
                videos[key] = {"source": key + ".mp4", "status": "ok", "frames": FRAMES, "flows": FRAMES - 1,
                               "width": SIZE, "height": SIZE, "fps": 25.0, "error": None}
    manifest = {"version": 1, "flow": {"algorithm": "dis", "preset": "fast", "bound": 20.0}, "resize": {},
                "videos": videos}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def write_tiny_splits(folder: Path, classes: tuple[str, ...] = CLASSES, leak: int = 0) -> Path:
    """UCF101-format lists (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt`` for N = 1, 2, 3):
    split N tests on group N. ``leak`` > 0 also lists that many test videos of each split in its
    training list (a broken split)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classInd.txt").write_text("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(classes)))
    for n in GROUPS:
        train = [(video_key(c, g, k), i + 1) for i, c in enumerate(classes) for g in GROUPS if g != n for k in (1, 2)]
        test = [video_key(c, n, k) for c in classes for k in (1, 2)]
        train += [(key, classes.index(key.split("/")[0]) + 1) for key in test[:leak]]
        (folder / f"trainlist{n:02d}.txt").write_text("".join(f"{k}.mp4 {label}\r\n" for k, label in train))
        (folder / f"testlist{n:02d}.txt").write_text("".join(f"{k}.mp4\r\n" for k in test))
    return folder


def tiny_run_config(root: Path, splits: Path, split: int = 1, streams: list[str] | None = None,
                    arch: str = "stfn", epochs: int = 1) -> Config:
    """One epoch of a tiny network (cnn_small, 4 frames of 32 px, L = 2) on the tiny data set."""
    cfg = Config(name="identity")
    cfg.model.arch, cfg.model.backbone, cfg.model.pretrained = arch, "cnn_small", False
    cfg.model.streams = streams or ["rgb", "flow"]
    cfg.model.flow_length, cfg.model.num_classes = 2, len(CLASSES)
    cfg.model.head.hidden_dim, cfg.model.head.blocks = 16, 1
    cfg.data.dataset, cfg.data.root, cfg.data.splits, cfg.data.split = "ucf101", str(root), str(splits), split
    cfg.data.frames, cfg.data.scale_size, cfg.data.crop_size, cfg.data.num_workers = 4, SIZE, SIZE, 0
    cfg.data.test_crops = 1
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr = epochs, 4, 1e-3
    cfg.train.optimizer, cfg.train.amp, cfg.train.channels_last = "adamw", "none", False
    return cfg
