"""Datasets of prepared videos: split lists joined with the ``stfn prepare`` manifest, as dict samples.

``build_dataset(data_cfg, subset, streams, flow_length, views=None)`` reads the split
(:mod:`stfn.data.splits`), keeps the listed videos that the manifest marks ``ok`` (missing or failed
ones are reported once: an error, or with ``data.on_missing=skip`` a warning and they are left out),
and returns a :class:`VideoFrameDataset`. An item is::

    {"rgb": (T, 3, S, S) | (V, T, 3, S, S) float, "flow": (T, 2L, S, S) | (V, T, 2L, S, S) float,
     "label": int (0-based), "index": int, "video": str (manifest key)}

with positions from :mod:`stfn.data.sampling` and transforms from :mod:`stfn.data.transforms`.
``build_loader`` wraps it in a ``DataLoader`` whose sampler hands every item a seed derived from
``(seed, epoch, index)``, so training samples are the same whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from stfn.config import STREAMS, ConfigError, DataConfig
from stfn.data.prepare.manifest import load_prepared_manifest
from stfn.data.prepare.packed import open_store
from stfn.data.sampling import sample_clip
from stfn.data.split_files import VideoRecord
from stfn.data.splits import Split, check_prepared, load_split
from stfn.data.transforms import EvalTransform, TrainTransform, build_transform
from stfn.errors import StfnError

__all__ = [
    "GPU_DECODERS",
    "JPEG_DECODERS",
    "SeededSampler",
    "VideoFrameDataset",
    "build_dataset",
    "build_loader",
    "check_decoder",
    "decode_jpegs",
]

log = logging.getLogger("stfn.data")
JPEG_DECODERS = ("opencv", "torchvision", "pillow", "nvjpeg")
GPU_DECODERS = ("nvjpeg",)  # decode on a CUDA device (the crops and flips stay on the CPU)


def check_decoder(decoder: str, what: str = "config key 'data.jpeg_decoder'") -> None:
    """One sentence for an unknown decoder, or for ``nvjpeg`` where no CUDA device is available."""
    if decoder not in JPEG_DECODERS:
        raise ConfigError(f"{what} must be one of {', '.join(JPEG_DECODERS)}, got '{decoder}'")
    if decoder in GPU_DECODERS and not torch.cuda.is_available():
        raise ConfigError(f"{what} is '{decoder}', which decodes on a CUDA GPU (torchvision's nvJPEG decoder), "
                          "but no CUDA device is available here; use opencv on a CPU machine")


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def unusable_message(split: Split, subset: str, root: Path, total: int, missing: list[str], failed: list[str]) -> str:
    """One sentence: how many listed videos are missing or failed, and the first few names."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing from the manifest (first: {_first(missing)})")
    if failed:
        parts.append(f"{len(failed)} failed in prepare (first: {_first(failed)})")
    return (f"{len(missing) + len(failed)} of {total} {subset} videos of {split.dataset} split {split.split} "
            f"are not usable in '{root}': " + "; ".join(parts))


def _decode(datas: list[bytes], gray: bool, decoder: str) -> list[np.ndarray] | torch.Tensor:
    """Decoded images: arrays ``(H, W)`` / ``(H, W, 3)`` RGB, or (torchvision) a tensor ``(N, C, H, W)``."""
    if decoder == "opencv":
        rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.11 decodes straight to RGB
        flag = cv2.IMREAD_GRAYSCALE if gray else (cv2.IMREAD_COLOR if rgb_flag is None else rgb_flag)
        out = [cv2.imdecode(np.frombuffer(d, np.uint8), flag) for d in datas]
        if any(a is None for a in out):
            raise ValueError("OpenCV could not decode the image")
        return out if gray or rgb_flag is not None else [cv2.cvtColor(a, cv2.COLOR_BGR2RGB) for a in out]
    if decoder == "pillow":
        from PIL import Image  # the other decoders load only when chosen (data.jpeg_decoder)

        return [np.asarray(Image.open(io.BytesIO(d)).convert("L" if gray else "RGB")) for d in datas]
    from torchvision.io import ImageReadMode, decode_jpeg  # see above

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        mode = ImageReadMode.GRAY if gray else ImageReadMode.RGB
        encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        if decoder == "nvjpeg":  # one batched nvJPEG call for the clip's frames, then back for the crops
            return torch.stack(decode_jpeg(encoded, mode=mode, device="cuda")).cpu()
        return torch.stack(decode_jpeg(encoded, mode=mode))


def decode_jpegs(datas: list[bytes], gray: bool, decoder: str, source: str | Path) -> torch.Tensor:
    """Decode JPEG bytes into uint8 ``(N, C, H, W)`` (C = 1 when ``gray``, else 3 RGB); errors name ``source``
    (the video's prepared folder or packed file).

    ``decoder``: ``opencv`` (default, fastest in ``benchmarks/loader.py``), ``torchvision``
    (``torchvision.io.decode_jpeg``, deprecated by torchvision 0.29) or ``pillow``; all give the same
    pixels when they use the same libjpeg-turbo. ``nvjpeg``: ``decode_jpeg`` on the CUDA device, all
    the files in one batched call, the pixels copied back (nvJPEG's IDCT may differ from libjpeg-turbo's
    by a grey level or so); it takes the decoding, the largest part of the loader's CPU time, off the CPU.
    """
    if decoder not in JPEG_DECODERS:
        raise StfnError(f"unknown JPEG decoder '{decoder}' (choose from {', '.join(JPEG_DECODERS)})")
    if decoder in GPU_DECODERS:
        check_decoder(decoder, "the JPEG decoder")
    try:
        images = _decode(datas, gray, decoder)
        if isinstance(images, torch.Tensor):
            return images
        x = torch.from_numpy(np.stack(images))
    except (RuntimeError, OSError, ValueError) as e:
        raise StfnError(f"cannot decode the JPEG images of '{source}': {e}") from None
    return x.unsqueeze(1) if gray else x.permute(0, 3, 1, 2)


def _unique(indices: list[int]) -> tuple[list[int], torch.Tensor | None]:
    """Sorted distinct indices (each image decoded once) and where each original index lies in them."""
    unique = sorted(set(indices))
    if unique == indices:
        return unique, None
    pos = {k: j for j, k in enumerate(unique)}
    return unique, torch.tensor([pos[i] for i in indices])


class VideoFrameDataset(Dataset):
    """Prepared videos of one subset as dict samples (see the module docstring for the item layout).

    Args:
        records: the usable videos (already joined with the manifest).
        counts: per key, ``(frames, flows)`` from the manifest.
        root: the prepared folder (``<root>/<key>/img_00001.jpg``, ``flow_x_00001.jpg``, ... or
            ``<root>/<key>.stfnpack``: ``storage``, the manifest's ``format``).
        streams: subset of ``("rgb", "flow")`` to load.
        frames: T positions per video; flow_length: L fields per flow stack.
        transform: a :class:`TrainTransform` (random; train items) or :class:`EvalTransform`.
    """

    def __init__(self, records: list[VideoRecord], counts: dict[str, tuple[int, int]], root: str | Path,
                 classes: list[str], streams: list[str], frames: int, flow_length: int,
                 transform: TrainTransform | EvalTransform, identity: dict | None = None,
                 decoder: str = "opencv", storage: str = "rawframes") -> None:
        bad = [s for s in streams if s not in STREAMS]
        if bad or not streams:
            raise StfnError(f"streams must be a non-empty subset of {STREAMS}, got {list(streams)}")
        self.records, self.counts, self.root = list(records), counts, Path(root)
        self.classes, self.streams = list(classes), list(streams)
        self.frames, self.flow_length, self.transform = frames, flow_length, transform
        self.train = isinstance(transform, TrainTransform)
        self.identity = dict(identity or {})
        self.decoder = decoder
        self.store = open_store(self.root, storage)

    @property
    def videos(self) -> list[str]:
        """Manifest keys of the items, in order (canonical: comparable across datasets of one tree)."""
        return [r.key for r in self.records]

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def load_clip(self, index: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """uint8 ``rgb (T, 3, H, W)`` / ``flow (T, 2L, H, W)`` of video ``index`` before transforms."""
        rec = self.records[index]
        num_frames, num_flows = self.counts[rec.key]
        idx = sample_clip(num_frames, num_flows, self.frames, self.flow_length, self.train, generator)
        clip: dict[str, torch.Tensor] = {}
        frames, where_rgb = _unique(idx.rgb) if "rgb" in self.streams else ([], None)
        stacks = [k for stack in idx.flow for k in stack] if "flow" in self.streams else []
        fields, where_flow = _unique(stacks) if stacks else ([], None)
        if frames or fields:
            rgb_bytes, xy_bytes = self.store.read(rec.key, frames, fields)
        source = self.store.location(rec.key)
        if frames:
            rgb = decode_jpegs(rgb_bytes, False, self.decoder, source)
            clip["rgb"] = rgb if where_rgb is None else rgb.index_select(0, where_rgb)
        if fields:
            xy = decode_jpegs(xy_bytes, True, self.decoder, source)  # (2U, 1, H, W): x_k, y_k, x_k', y_k', ...
            xy = xy if where_flow is None else xy.view(len(fields), 2, *xy.shape[-2:]).index_select(0, where_flow)
            clip["flow"] = xy.reshape(self.frames, 2 * self.flow_length, *xy.shape[-2:])
        elif "flow" in self.streams:  # a one-frame video has no flow: zero motion (q = 128, as prepare quantises 0)
            h, w = self._frame_size(rec.key, clip)
            clip["flow"] = torch.full((self.frames, 2 * self.flow_length, h, w), 128, dtype=torch.uint8)
        return clip

    def _frame_size(self, key: str, clip: dict[str, torch.Tensor]) -> tuple[int, int]:
        if "rgb" in clip:
            return tuple(clip["rgb"].shape[-2:])
        first = self.store.read(key, [0], [])[0]
        return tuple(decode_jpegs(first, True, self.decoder, self.store.location(key)).shape[-2:])

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """``item`` is an index, or ``(index, seed)`` from :class:`SeededSampler` (reproducible sample)."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        generator = torch.Generator().manual_seed(seed) if seed is not None and self.train else None
        out = self.transform(self.load_clip(index, generator), generator)
        rec = self.records[index]
        out.update(label=rec.label, index=index, video=rec.key)
        return out


def build_dataset(data_cfg: DataConfig, subset: str, streams: list[str], flow_length: int,
                  views: int | None = None) -> VideoFrameDataset:
    """The ``subset`` ("train" or "test") of the configured split, joined with the prepared folder.

    ``views`` overrides ``data_cfg.test_crops`` for test items. ``data.on_missing`` decides what
    listed-but-unusable videos do: ``error`` raises one :class:`StfnError` naming how many and the
    first few, ``skip`` logs that sentence once as a warning and leaves them out.
    """
    if subset not in ("train", "test"):
        raise StfnError(f"subset must be 'train' or 'test', got '{subset}'")
    if data_cfg.on_missing not in ("error", "skip"):
        raise ConfigError(f"config key 'data.on_missing' must be 'error' or 'skip', got '{data_cfg.on_missing}'")
    if data_cfg.frames < 1 or flow_length < 1:
        raise ConfigError(f"config key 'data.frames' ({data_cfg.frames}) and flow_length ({flow_length}) must be >= 1")
    check_decoder(data_cfg.jpeg_decoder)
    if not data_cfg.root:
        raise ConfigError("config key 'data.root' is empty: set it to the folder written by `stfn prepare`")
    split = load_split(data_cfg.dataset, data_cfg.splits, data_cfg.split, train_list=data_cfg.train_list,
                       test_list=data_cfg.test_list, class_names=data_cfg.class_names)
    transform = build_transform(data_cfg, train=subset == "train", views=views)
    root = Path(data_cfg.root)
    manifest = load_prepared_manifest(root)
    listed = split.records(subset)
    if not listed:
        raise StfnError(f"the {subset} list of {split.dataset} split {split.split} is empty")
    usable, missing, failed = check_prepared(listed, manifest.videos)
    if missing or failed:
        message = unusable_message(split, subset, root, len(listed), missing, failed)
        if data_cfg.on_missing == "error" or not usable:
            raise StfnError(message + "; prepare them, or set data.on_missing=skip to leave them out")
        log.warning("stfn: %s; skipping them (data.on_missing=skip)", message)
    counts = {r.key: (int(manifest.videos[r.key]["frames"]), int(manifest.videos[r.key].get("flows") or 0))
              for r in usable}
    return VideoFrameDataset(usable, counts, root, split.classes, list(streams), data_cfg.frames, flow_length,
                             transform, identity=split.identity, decoder=data_cfg.jpeg_decoder,
                             storage=manifest.format)


class SeededSampler(Sampler):
    """Yields ``(index, seed)``: a shuffled (train) or ordered (test) pass, optionally one rank's share.

    The order and the per-item seeds depend only on ``(seed, epoch)``, so a sample is the same with
    any number of workers and after a resume. Call ``set_epoch(e)`` before each epoch (as with
    ``DistributedSampler``); without it, every pass advances the epoch by one. With ``world_size > 1``
    each rank takes every ``world_size``-th item; ``pad=True`` (training) repeats items so all ranks
    get the same count, ``pad=False`` (evaluation) gives every item to exactly one rank.
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pad: bool = True) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.world_size)
        return len(range(self.rank, self.size, self.world_size))

    def __iter__(self):
        # torch's CPU generator keeps 32 bits of a seed: hash (seed, epoch) into them
        mixed = hashlib.sha256(f"stfn-sampler:{self.seed}:{self.epoch}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(mixed[:4], "little"))
        self.epoch += 1
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**32, (self.size,), generator=g).tolist()
        order = order.tolist()
        if self.pad and self.size % self.world_size:
            extra = self.world_size - self.size % self.world_size
            order += (order * math.ceil(extra / max(self.size, 1)))[:extra]
        return iter([(i, seeds[i]) for i in order[self.rank :: self.world_size]])


def _worker_init(worker_id: int) -> None:
    """One OpenCV thread per loader worker (torch already uses one), so workers do not oversubscribe."""
    cv2.setNumThreads(1)


def build_loader(dataset: Dataset, batch_size: int, train: bool, workers: int, distributed: bool = False,
                 seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` with a :class:`SeededSampler` (``loader.sampler.set_epoch(e)``).

    Shuffles when ``train``; ``distributed`` shards over the initialised process group (padded for
    training, exact for evaluation: each rank then holds a different number of test videos, so gather
    predictions, e.g. with ``all_gather_object``); pinned memory when CUDA is available; persistent
    workers with one torch and one OpenCV thread each. Training randomness comes from the sampler's
    per-item seeds, so the same ``seed`` gives the same samples with any number of workers. The loader
    has its own ``generator`` (seeded from ``seed``; ``stfn.engine.train`` reseeds it every epoch), so
    the base seed it draws for its workers never consumes the global RNG that dropout draws from: with
    persistent workers it is drawn once per run, and a resumed run would otherwise shift the dropout
    stream by one draw. In training, a last batch that would hold a single video is dropped
    (``drop_last`` drops any incomplete one).
    """
    rank, world = 0, 1
    if distributed:
        if not dist.is_available() or not dist.is_initialized():
            raise StfnError("build_loader(distributed=True) needs an initialised torch.distributed process group")
        rank, world = dist.get_rank(), dist.get_world_size()
    sampler = SeededSampler(len(dataset), shuffle=train, seed=seed, rank=rank, world_size=world, pad=train)
    # A last training batch of one video cannot be batch-normalised (BatchNorm1d raises in training, as
    # in Temporal-Inception's and TS-LSTM's heads): drop it. UCF101 split 1 has 9537 = 596 x 16 + 1.
    drop_last = drop_last or (train and len(sampler) % batch_size == 1 and len(sampler) > 1)
    # CUDA cannot be used in forked workers: a GPU decoder's workers start fresh (spawn)
    gpu_decoding = getattr(dataset, "decoder", "") in GPU_DECODERS and workers > 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        multiprocessing_context="spawn" if gpu_decoding else None,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )
