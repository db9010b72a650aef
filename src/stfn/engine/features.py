"""Cached per-frame features: extract them once, train heads on them in seconds.

Layout of a features folder (one array per subset and stream, chosen for speed at UCF101 scale:
9.5k videos x 25 x 2048 x 2 streams is ~1.9 GB in float16; a memory-mapped ``.npy`` reads a
video's rows with one page-cache copy and no per-file open, where 19k small files would not)::

    DIR/features.json          {"version", "streams", "frames", "feature_dim", "dtype", "classes",
                                "source", "source_checkpoint", "model", "data",
                                "subsets": {"train": {"videos", "labels", "identity"}, "test": ...}}
    DIR/{subset}_{stream}.npy  float16 (N, T, C): row i = video subsets[subset].videos[i]

Extraction uses the deterministic test view (centre crop, ``T = data.frames`` positions over the
whole video) for both subsets. Each array is written to a temporary file and renamed when complete,
and ``features.json`` is rewritten after each subset, so an interrupted run redoes at most one subset.

Training with ``data.features=DIR`` uses :class:`FeatureDataset`: items ``rgb_feat`` / ``flow_feat``
``(T', C)`` float32 where ``T' = data.frames``; training samples one random cached position per
segment (as :mod:`stfn.data.sampling` does on frames), testing takes the segment centres.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from stfn.config import Config, config_to_dict
from stfn.errors import StfnError
from stfn.fileio import atomic_write_json

__all__ = ["FeatureDataset", "build_engine_dataset", "extract_features", "load_features_meta"]

META = "features.json"
SUBSETS = ("train", "test")


def load_features_meta(root: str | os.PathLike) -> dict[str, Any]:
    """``features.json`` of a features folder, with a clear error when it is not one."""
    import json

    path = Path(root) / META
    if not path.is_file():
        raise StfnError(f"'{root}' is not a features folder (no {META}; write one with `stfn extract-features`)")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise StfnError(f"'{path}' is not valid JSON ({e})") from None


def _positions(n: int, count: int, train: bool, generator: torch.Generator | None = None) -> list[int]:
    """``count`` of the ``n`` cached positions: one per equal segment (random in training)."""
    if count <= 0 or count >= n:
        return list(range(n))
    if not train:
        return [(2 * t + 1) * n // (2 * count) for t in range(count)]
    u = torch.rand(count, generator=generator, dtype=torch.float64).tolist()
    return [min(int((t + u[t]) * n / count), n - 1) for t in range(count)]


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


def build_engine_dataset(cfg: Config, subset: str, views: int | None = None) -> Dataset:
    """The dataset training and evaluation read: cached features when ``data.features`` is set,
    else ``stfn.data.datasets.build_dataset`` (test views: ``views`` or ``data.test_crops``)."""
    if cfg.data.features:
        ds = FeatureDataset(cfg.data.features, subset, cfg.model.streams, cfg.data.frames, train=subset == "train")
        made_for = ds.identity.get("split")
        if made_for is not None and int(made_for) != cfg.data.split:
            raise StfnError(f"the features in '{cfg.data.features}' were extracted for split {made_for}, "
                            f"not split {cfg.data.split}")
        return ds
    from stfn.data.datasets import build_dataset

    if subset == "test" and views is None:
        views = cfg.data.test_crops
    return build_dataset(cfg.data, subset, cfg.model.streams, cfg.model.flow_length, views=views)


def _extraction_dataset(cfg: Config, subset: str) -> Dataset:
    """``subset``'s videos with the deterministic single centre view (also for the training list)."""
    from stfn.data.datasets import build_dataset
    from stfn.data.transforms import build_transform

    dataset = build_dataset(cfg.data, subset, cfg.model.streams, cfg.model.flow_length, views=1)
    if subset == "train":  # the training list seen as test videos: segment centres, centre crop
        dataset.transform = build_transform(cfg.data, train=False, views=1)
        dataset.train = False
    return dataset


@torch.no_grad()
def _extract_subset(model: torch.nn.Module, dataset: Dataset, streams: list[str], path_of: dict[str, Path],
                    device: torch.device, amp_dtype: torch.dtype | None, batch_size: int, num_workers: int,
                    progress: bool) -> list[int]:
    """Fill ``path_of[stream]`` with float16 ``(N, T, C)`` features; returns the labels in order."""
    from tqdm import tqdm

    from stfn.engine.evaluate import autocast_context

    n = len(dataset)
    arrays: dict[str, np.ndarray] = {}
    tmps: dict[str, Path] = {}
    labels = [-1] * n
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    bar = tqdm(total=n, desc=f"features {path_of[streams[0]].stem.split('_')[0]}", unit="video",
               disable=not progress, dynamic_ncols=True)
    try:
        for batch in loader:
            inputs = {}
            for s in streams:
                x = batch[s]
                inputs[s] = (x[:, 0] if x.ndim == 6 else x).to(device, non_blocking=True)  # the one view
            with autocast_context(device, amp_dtype):
                feats = model.forward_features(inputs)
            for s in streams:
                f = feats[f"{s}_feat"].float().cpu().numpy()
                if s not in arrays:
                    tmps[s] = path_of[s].with_name("." + path_of[s].name + ".tmp.npy")
                    arrays[s] = np.lib.format.open_memmap(tmps[s], mode="w+", dtype=np.float16,
                                                          shape=(n, *f.shape[1:]))
                arrays[s][batch["index"].numpy()] = f.astype(np.float16)
            for i, label in zip(batch["index"].tolist(), batch["label"].tolist(), strict=True):
                labels[i] = int(label)
            bar.update(len(batch["index"]))
        for s in streams:
            arrays[s].flush()
            del arrays[s]
            os.replace(tmps[s], path_of[s])
        return labels
    finally:
        bar.close()
        for tmp in tmps.values():
            if tmp.exists():
                tmp.unlink()


def extract_features(
    source: str | os.PathLike | Config,
    out_dir: str | os.PathLike,
    subsets: tuple[str, ...] | list[str] = SUBSETS,
    *,
    frames: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Write per-video ``(T, C)`` backbone features per stream of ``subsets`` to ``out_dir``.

    ``source`` is a checkpoint (its backbones and data settings) or a :class:`Config` (a fresh model:
    random or ImageNet backbones, per ``model.pretrained``). ``frames`` overrides ``data.frames``.
    A subset already extracted with the same settings is skipped. Returns ``out_dir``.
    """
    from stfn.engine.checkpoint import load_model
    from stfn.engine.train import resolve_amp

    if isinstance(source, Config):
        from stfn.models import build_model

        cfg = copy.deepcopy(source)
        model = build_model(cfg.model)
        source_ckpt = ""
    else:
        model, cfg, _ = load_model(source)
        source_ckpt = str(Path(source).resolve())
    if cfg.data.features:
        raise StfnError(f"cannot extract features with a model trained on cached features ('{cfg.data.features}')")
    if frames is not None:
        cfg.data.frames = frames
    for subset in subsets:
        if subset not in SUBSETS:
            raise StfnError(f"unknown subset '{subset}' (choose from {', '.join(SUBSETS)})")
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    amp_dtype, _ = resolve_amp(cfg.train.amp, dev, cfg.train.channels_last)
    model.to(dev).eval()
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"source": str(source) if not isinstance(source, Config) else "config",
                "source_checkpoint": source_ckpt, "streams": list(cfg.model.streams), "frames": cfg.data.frames,
                "feature_dim": int(model.feature_dim), "model": config_to_dict(cfg)["model"],
                "data": config_to_dict(cfg)["data"]}
    meta: dict[str, Any] = {"version": 1, "dtype": "float16", **settings, "classes": None, "subsets": {}}
    if (out / META).is_file():
        old = load_features_meta(out)
        if all(old.get(k) == v for k, v in settings.items()):
            meta = old  # same extraction: keep the subsets already done
    for subset in subsets:
        paths = {s: out / f"{subset}_{s}.npy" for s in cfg.model.streams}
        if subset in meta["subsets"] and all(p.is_file() for p in paths.values()):
            continue
        dataset = _extraction_dataset(cfg, subset)
        bs = batch_size or max(1, cfg.train.batch_size)
        labels = _extract_subset(model, dataset, list(cfg.model.streams), paths, dev, amp_dtype, bs,
                                 cfg.data.num_workers, progress)
        from stfn.engine.checkpoint import plain

        meta["classes"] = list(dataset.classes)
        meta["subsets"][subset] = {"videos": list(dataset.videos),
                                   "labels": labels,
                                   "identity": plain(getattr(dataset, "identity", {}))}
        atomic_write_json(out / META, meta)
    return out

