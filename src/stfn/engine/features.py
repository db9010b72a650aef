"""Cached per-frame features: extract them once, train heads on them in seconds.

The folder layout and its reader (:class:`stfn.data.features.FeatureDataset`) are described in
:mod:`stfn.data.features`; one array per subset and stream, chosen for speed at UCF101 scale: 9.5k
videos x 25 x 2048 x 2 streams is ~1.9 GB in float16, and a memory-mapped ``.npy`` reads a video's
rows with one page-cache copy and no per-file open, where 19k small files would not.

Extraction uses the deterministic test view (centre crop, ``T = data.frames`` positions over the
whole video) for both subsets. Each array is written to a temporary file and renamed when complete,
and ``features.json`` is rewritten after each subset, so an interrupted run redoes at most one subset.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stfn.config import Config, config_to_dict
from stfn.data.datasets import build_dataset
from stfn.data.features import META, load_features_meta
from stfn.data.transforms import build_transform
from stfn.engine.backends import apply_backend, choose_backend, describe_backend
from stfn.engine.checkpoint import load_model, seen_videos, to_plain_types
from stfn.engine.data_identity import check_dataset, check_overlap
from stfn.engine.hub import is_repo_id
from stfn.errors import StfnError
from stfn.fileio import atomic_write_json
from stfn.models import build_model
from stfn.runtime import autocast_context, resolve_amp, resolve_device

__all__ = ["extract_features"]

SUBSETS = ("train", "test")


def _extraction_dataset(cfg: Config, subset: str) -> Dataset:
    """``subset``'s videos with the deterministic single centre view (also for the training list)."""
    dataset = build_dataset(cfg.data, subset, cfg.model.streams, cfg.model.flow_length, views=1)
    if subset == "train":  # the training list seen as test videos: segment centres, centre crop
        dataset.transform = build_transform(cfg.data, train=False, views=1)
        dataset.train = False
    return dataset


@torch.no_grad()
def _extract_subset(model: torch.nn.Module, dataset: Dataset, streams: list[str], path_of: dict[str, Path],
                    device: torch.device, amp_dtype: torch.dtype | None, batch_size: int, num_workers: int,
                    progress: bool, per_forward: int = 0) -> list[int]:
    """Fill ``path_of[stream]`` with float16 ``(N, T, C)`` features; returns the labels in order.
    ``per_forward`` > 0: the backbones see that many videos of a loader batch at a time (else all)."""
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
            step = per_forward or len(batch["index"])
            with autocast_context(device, amp_dtype):
                chunks = [model.forward_features({k: v[i : i + step] for k, v in inputs.items()})
                          for i in range(0, len(batch["index"]), step)]
            feats = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
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
    data_root: str | os.PathLike | None = None,
    splits_dir: str | os.PathLike | None = None,
    split: int | None = None,
    torch_compile: bool | str | None = None,
    backend: str = "auto",
) -> Path:
    """Write per-video ``(T, C)`` backbone features per stream of ``subsets`` to ``out_dir``.

    ``source`` is a checkpoint (its backbones and data settings) or a :class:`Config` (a fresh model:
    random or ImageNet backbones, per ``model.pretrained``). ``frames`` overrides ``data.frames``.
    ``torch_compile`` (``auto | true | false``; default ``train.compile``) compiles the backbones, with
    ``auto`` for a subset long enough to repay it (:func:`~stfn.runtime.should_compile`); ``backend``
    (``auto | eager | compile | openvino``) the runtime of the backbones, ``auto`` OpenVINO where it was
    measured fastest and the subset repays its conversion, else ``torch_compile``'s choice
    (:func:`stfn.engine.backends.choose_backend`; said on stderr with ``progress``).
    ``data_root`` / ``splits_dir`` / ``split`` point a checkpoint at its data where it is now (or at
    another split); its dataset identity is checked as ``stfn eval`` checks it, and test videos the
    checkpoint has seen are refused. A subset already extracted with the same settings is skipped.
    ``features.json`` records the videos the source checkpoint has seen (``source_videos``), so a
    head trained on the features inherits them (its leak check). Returns ``out_dir``.
    """
    model, cfg, ckpt = _load_source(source, data_root, splits_dir, split)
    _check_request(cfg, subsets)
    if frames is not None:
        cfg.data.frames = frames
    dev, amp_dtype = _place_model(model, cfg, device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = _resume_meta(out, _source_settings(source, cfg, ckpt, model))
    setting, what = (cfg.train.compile, "config key 'train.compile'") if torch_compile is None else (torch_compile, "torch_compile")
    ran = None
    for subset in subsets:
        paths = {s: out / f"{subset}_{s}.npy" for s in cfg.model.streams}
        if subset in meta["subsets"] and all(p.is_file() for p in paths.values()):
            continue
        dataset = _checked_dataset(cfg, subset, source, ckpt)
        if ran is None:
            chosen = choose_backend(backend, model, dev, len(dataset) * cfg.data.frames, cfg.data.crop_size,
                                    setting, compile_what=what)
            ran = apply_backend(model, chosen, amp_dtype)
            if progress:
                print(f"backbones: {describe_backend(model, ran, amp_dtype)}", file=sys.stderr, flush=True)
        # A compiled backbone on the CPU sees one video (T frames) at a time: a fixed shape (no
        # recompiles), and CPU throughput falls with the batch (compiled bf16 resnet50, 2-core Zen 4:
        # 39.8 images/s at 16 frames per call, 35.4 at 400 = 16 videos x 25 frames).
        per_forward = 1 if ran == "compile" and dev.type == "cpu" else 0
        labels = _extract_subset(model, dataset, list(cfg.model.streams), paths, dev, amp_dtype,
                                 batch_size or max(1, cfg.train.batch_size), cfg.data.num_workers, progress,
                                 per_forward)
        meta["classes"] = list(dataset.classes)
        meta["subsets"][subset] = {"videos": list(dataset.videos), "labels": labels,
                                   "identity": to_plain_types(getattr(dataset, "identity", {}))}
        atomic_write_json(out / META, meta)
    return out


def _check_request(cfg: Config, subsets: tuple[str, ...] | list[str]) -> None:
    """Refuse a source that holds no backbones (a head trained on cached features) and unknown subsets."""
    if cfg.data.features:
        raise StfnError(f"cannot extract features with a model trained on cached features ('{cfg.data.features}')")
    for subset in subsets:
        if subset not in SUBSETS:
            raise StfnError(f"unknown subset '{subset}' (choose from {', '.join(SUBSETS)})")


def _place_model(model: torch.nn.Module, cfg: Config, device: str) -> tuple[torch.device, torch.dtype | None]:
    """Move ``model`` to ``device`` in eval mode (channels_last per ``train.channels_last``); returns the
    device and the autocast dtype of ``train.amp`` there."""
    dev = resolve_device(device, what="device")
    amp_dtype, _ = resolve_amp(cfg.train.amp, dev, cfg.train.channels_last)
    model.to(dev).eval()
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return dev, amp_dtype


def _source_settings(source: str | os.PathLike | Config, cfg: Config, ckpt: dict[str, Any] | None,
                     model: torch.nn.Module) -> dict[str, Any]:
    """What the features depend on, as ``features.json`` records it: the source (and the videos its
    checkpoint has seen), the streams, frames, feature size and the model and data settings."""
    return {"source": str(source) if not isinstance(source, Config) else "config",
            "source_checkpoint": "" if ckpt is None else str(source) if is_repo_id(str(source))
            else str(Path(source).resolve()),
            "streams": list(cfg.model.streams), "frames": cfg.data.frames,
            "feature_dim": int(model.feature_dim), "model": config_to_dict(cfg)["model"],
            "data": config_to_dict(cfg)["data"],
            "source_videos": None if ckpt is None else sorted(set().union(*seen_videos(ckpt)))}


def _checked_dataset(cfg: Config, subset: str, source: str | os.PathLike | Config,
                     ckpt: dict[str, Any] | None) -> Dataset:
    """``subset``'s extraction dataset; for a checkpoint, refused when its lists are not those the
    checkpoint trained with, or (the test subset) when it holds videos the checkpoint has seen."""
    dataset = _extraction_dataset(cfg, subset)
    if ckpt is not None:
        check_dataset(ckpt, source, cfg, dict(getattr(dataset, "identity", {})))
        if subset == "test":
            check_overlap(ckpt, list(dataset.videos), f"checkpoint '{source}'", cfg.data.split)
    return dataset


def _load_source(
    source: str | os.PathLike | Config, data_root: str | os.PathLike | None,
    splits_dir: str | os.PathLike | None, split: int | None,
) -> tuple[torch.nn.Module, Config, dict[str, Any] | None]:
    """``(model, cfg, checkpoint or None)`` of :func:`extract_features`' ``source``: a fresh model of a
    :class:`Config`, or a checkpoint's, pointed at ``data_root`` / ``splits_dir`` / ``split`` when given."""
    if isinstance(source, Config):
        cfg = copy.deepcopy(source)
        return build_model(cfg.model), cfg, None
    model, cfg, ckpt = load_model(source)
    cfg.data.root = str(data_root) if data_root else cfg.data.root
    cfg.data.splits = str(splits_dir) if splits_dir else cfg.data.splits
    cfg.data.split = split if split is not None else cfg.data.split
    return model, cfg, ckpt


def _resume_meta(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The ``features.json`` to fill: the one in ``out`` when it was written with the same ``settings``
    (its finished subsets are kept), else a fresh one."""
    if (out / META).is_file():
        old = load_features_meta(out)
        if all(old.get(k) == v for k, v in settings.items()):
            return old
    return {"version": 1, "dtype": "float16", **settings, "classes": None, "subsets": {}}
