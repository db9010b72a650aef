"""Clip transforms on in-memory uint8 tensors: one random geometry for every frame and both streams.

Input: a dict with ``rgb`` uint8 ``(T, 3, H, W)`` and/or ``flow`` uint8 ``(T, 2L, H, W)`` (channels
x1, y1, x2, y2, ...; quantised as in ``stfn.data.video.flow``, ``q = round((clip(v, -b, b) + b) * 255 / 2b)``),
all frames of the same size. Output: float tensors, ``(T, C, S, S)`` for training and
``(V, T, C, S, S)`` for V test views, ``S = crop_size``.

Geometry. Frames are first (virtually) scaled so their short side is ``scale_size``; crop boxes are
chosen on that scaled frame and mapped back, so every crop is cut from the stored frame and resized
once, on uint8 planes with OpenCV (no resize at all when the stored short side already equals
``scale_size`` and the box is ``crop_size`` square). Flips and normalisation follow the resize.

- train: TSN multi-scale crop: width and height each ``scale * short side`` with scales
  (1, .875, .75, .66) (sizes within 3 px of ``crop_size`` snap to it; the two scale indices differ by at
  most one), at one of TSN's 13 fixed offsets (4 corners, centre, edge midpoints, quarter points);
  resize to ``crop_size``; horizontal flip with probability 1/2; colour jitter on RGB only.
- test: ``views`` = 1 (centre crop), 3 (three crops along the long side), 10 (TSN: 4 corners + centre,
  then the same 5 flipped).

A horizontal flip mirrors the image and negates flow-x. On quantised values that is ``q -> 255 - q``
on the x channels, which is exact: ``255 - q`` dequantises to ``-v``. The datasets of
:data:`stfn.data.ssv2.NO_FLIP_DATASETS` (Something-Something v2, whose classes such as "Pushing something
from left to right" change meaning in a mirror) never flip: ``data.hflip`` is ignored for them with a
warning, as TSM trains them, and the 10 test views (which hold 5 flipped crops) are refused.

Normalisation. RGB: ``(x / 255 - mean) / std`` with ImageNet mean/std. Flow:
``(q - 127.5) / 127.5``, which equals ``v / b`` exactly, i.e. flow in units of the clipping bound, in
[-1, 1] and antisymmetric under the flip.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch

from stfn.config import ConfigError, DataConfig
from stfn.data.ssv2 import NO_FLIP_DATASETS

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SCALES",
    "EvalTransform",
    "TrainTransform",
    "build_transform",
    "color_jitter",
    "crop_resize",
    "eval_crop_boxes",
    "hflip",
    "hflip_flow",
    "multiscale_crop_box",
    "normalize_flow",
    "normalize_rgb",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALES = (1.0, 0.875, 0.75, 0.66)
VIEWS = (1, 3, 10)

Box = tuple[int, int, int, int]  # top, left, height, width (pixels)
log = logging.getLogger("stfn.data")


def _scaled_size(height: int, width: int, scale_size: int) -> tuple[int, int, float]:
    """(height, width) of the frame scaled to short side ``scale_size``, and the factor stored/scaled."""
    r = min(height, width) / scale_size
    return max(round(height / r), scale_size), max(round(width / r), scale_size), r


def _to_stored(box: Box, r: float, height: int, width: int) -> Box:
    """Map a box on the scaled frame back to the stored frame (factor ``r`` = stored / scaled)."""
    if r == 1.0:
        return box
    top, left = min(round(box[0] * r), height - 1), min(round(box[1] * r), width - 1)
    h = max(1, min(round(box[2] * r), height - top))
    w = max(1, min(round(box[3] * r), width - left))
    return top, left, h, w


def multiscale_crop_box(
    height: int,
    width: int,
    scale_size: int,
    crop_size: int,
    scales: tuple[float, ...] = SCALES,
    max_distort: int = 1,
    generator: torch.Generator | None = None,
) -> Box:
    """A random TSN multi-scale crop box, in pixels of the stored ``height x width`` frame."""
    sh, sw, r = _scaled_size(height, width, scale_size)
    base = min(sh, sw)
    sizes = [int(base * s) for s in scales]
    sizes = [crop_size if abs(s - crop_size) < 3 else s for s in sizes]
    pairs = [(min(h, sh), min(w, sw)) for i, h in enumerate(sizes) for j, w in enumerate(sizes)
             if abs(i - j) <= max_distort]
    ch, cw = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
    hs, ws = (sh - ch) // 4, (sw - cw) // 4
    offsets = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2),  # corners and centre, as (y, x) steps
               (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
    oy, ox = offsets[int(torch.randint(len(offsets), (1,), generator=generator))]
    return _to_stored((oy * hs, ox * ws, ch, cw), r, height, width)


def eval_crop_boxes(height: int, width: int, scale_size: int, crop_size: int, views: int) -> list[tuple[Box, bool]]:
    """``views`` (1, 3 or 10) test crops as ``(box, flipped)``, boxes in stored-frame pixels."""
    if views not in VIEWS:
        raise ValueError(f"test views must be one of {VIEWS}, got {views}")
    sh, sw, r = _scaled_size(height, width, scale_size)
    c = crop_size
    centre = ((sh - c) // 2, (sw - c) // 2, c, c)
    if views == 1:
        boxes = [centre]
    elif views == 3:
        if sw >= sh:
            boxes = [(centre[0], x, c, c) for x in (0, (sw - c) // 2, sw - c)]
        else:
            boxes = [(y, centre[1], c, c) for y in (0, (sh - c) // 2, sh - c)]
    else:
        boxes = [(0, 0, c, c), (0, sw - c, c, c), (sh - c, 0, c, c), (sh - c, sw - c, c, c), centre]
    out = [(_to_stored(b, r, height, width), False) for b in boxes]
    if views == 10:
        out += [(b, True) for b, _ in out]
    return out


def crop_resize(x: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """Cut ``box`` from uint8 ``x`` ``(T, C, H, W)`` and resize it to uint8 ``(T, C, size, size)`` (maybe a view).

    OpenCV: bilinear (``INTER_LINEAR``), or area averaging (``INTER_AREA``, anti-aliased) when the
    box shrinks by more than 1.25x; per frame when ``x`` is a view of ``(T, H, W, 3)`` memory (as
    decoders return RGB), else per plane. No resize when the box is already ``size`` square.
    """
    top, left, h, w = box
    if (h, w) == (size, size):
        return x[..., top : top + h, left : left + w]
    interp = cv2.INTER_AREA if min(h, w) > 1.25 * size else cv2.INTER_LINEAR
    if x.dim() == 4 and x.shape[1] == 3 and x.permute(0, 2, 3, 1).is_contiguous():
        frames = x.permute(0, 2, 3, 1).numpy()
        out = np.empty((frames.shape[0], size, size, 3), dtype=np.uint8)
        for i in range(frames.shape[0]):
            cv2.resize(frames[i, top : top + h, left : left + w], (size, size), dst=out[i], interpolation=interp)
        return torch.from_numpy(out).permute(0, 3, 1, 2)
    planes = x.contiguous().reshape(-1, *x.shape[-2:]).numpy()
    out = np.empty((planes.shape[0], size, size), dtype=np.uint8)
    for i in range(planes.shape[0]):
        cv2.resize(planes[i, top : top + h, left : left + w], (size, size), dst=out[i], interpolation=interp)
    return torch.from_numpy(out).view(*x.shape[:-2], size, size)


def hflip_flow(flow: torch.Tensor) -> torch.Tensor:
    """Mirror quantised flow ``(..., 2L, H, W)`` (uint8) horizontally: flip W, ``x -> 255 - x`` on x channels."""
    out = flow.flip(-1)
    out[..., 0::2, :, :] = 255 - out[..., 0::2, :, :]
    return out


def hflip(clip: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mirror a quantised clip (``rgb`` and/or ``flow``, uint8); flow-x is negated (``255 - q``)."""
    out = dict(clip)
    if "rgb" in clip:
        out["rgb"] = clip["rgb"].flip(-1)
    if "flow" in clip:
        out["flow"] = hflip_flow(clip["flow"])
    return out


def color_jitter(rgb: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, contrast and saturation, each by a factor in ``[1 - s, 1 + s]``, the same for all frames.

    ``rgb`` is float ``(T, 3, H, W)`` in 0..255; contrast blends each frame with its mean grey level,
    saturation with its grey image (as torchvision's ColorJitter does per image).
    """
    if strength <= 0:
        return rgb
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    b, c, s = (lo + (hi - lo) * torch.rand(3, generator=generator, dtype=torch.float64)).tolist()
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype).view(1, 3, 1, 1)
    x = rgb * b
    grey_mean = (x * weights).sum(1, keepdim=True).mean(dim=(-2, -1), keepdim=True)
    x = (grey_mean + c * (x - grey_mean)).clamp_(0, 255)
    grey = (x * weights).sum(1, keepdim=True)
    return (grey + s * (x - grey)).clamp_(0, 255)


def normalize_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """0..255 RGB ``(..., 3, H, W)`` -> ImageNet-normalised float."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    return rgb.to(torch.float32, memory_format=torch.contiguous_format, copy=True).sub_(mean).div_(std)


def normalize_flow(flow: torch.Tensor) -> torch.Tensor:
    """Quantised flow 0..255 -> ``(q - 127.5) / 127.5`` = ``v / bound`` in [-1, 1]."""
    return flow.to(torch.float32, memory_format=torch.contiguous_format, copy=True).sub_(127.5).div_(127.5)


def _check(clip: dict[str, torch.Tensor]) -> tuple[int, int]:
    sizes = set()
    for name in ("rgb", "flow"):
        if name in clip:
            x = clip[name]
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"'{name}' must be a uint8 (T, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
            sizes.add(tuple(x.shape[-2:]))
    if len(sizes) != 1:
        raise ValueError(f"a clip needs 'rgb' and/or 'flow' of one frame size, got sizes {sorted(sizes)}")
    return sizes.pop()


class TrainTransform:
    """Random multi-scale crop + resize + flip (+ colour jitter) shared by all frames and streams.

    ``__call__(clip, generator)`` maps uint8 ``rgb (T, 3, H, W)`` / ``flow (T, 2L, H, W)`` to float
    ``(T, C, crop_size, crop_size)``; other keys pass through.
    """

    def __init__(self, crop_size: int = 224, scale_size: int = 256, color_jitter: float = 0.0,
                 scales: tuple[float, ...] = SCALES, flip: bool = True) -> None:
        if scale_size < crop_size:
            raise ValueError(f"scale_size ({scale_size}) must be at least crop_size ({crop_size})")
        self.crop_size, self.scale_size, self.jitter = crop_size, scale_size, color_jitter
        self.scales, self.flip = tuple(scales), flip

    def __call__(self, clip: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        h, w = _check(clip)
        box = multiscale_crop_box(h, w, self.scale_size, self.crop_size, self.scales, generator=generator)
        flip = self.flip and bool(torch.rand(1, generator=generator) < 0.5)
        out = dict(clip)
        if "rgb" in clip:
            rgb = crop_resize(clip["rgb"], box, self.crop_size)
            rgb = rgb.flip(-1) if flip else rgb
            if self.jitter > 0:
                rgb = color_jitter(rgb.float(), self.jitter, generator)
            out["rgb"] = normalize_rgb(rgb)
        if "flow" in clip:
            flow = crop_resize(clip["flow"], box, self.crop_size)
            out["flow"] = normalize_flow(hflip_flow(flow) if flip else flow)
        return out


class EvalTransform:
    """Deterministic test views: uint8 ``(T, C, H, W)`` -> float ``(V, T, C, crop_size, crop_size)``."""

    def __init__(self, crop_size: int = 224, scale_size: int = 256, views: int = 1) -> None:
        if views not in VIEWS:
            raise ValueError(f"test views must be one of {VIEWS}, got {views}")
        if scale_size < crop_size:
            raise ValueError(f"scale_size ({scale_size}) must be at least crop_size ({crop_size})")
        self.crop_size, self.scale_size, self.views = crop_size, scale_size, views

    def __call__(self, clip: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        h, w = _check(clip)
        boxes = eval_crop_boxes(h, w, self.scale_size, self.crop_size, self.views)
        out = dict(clip)
        for name, norm in (("rgb", normalize_rgb), ("flow", normalize_flow)):
            if name in clip:
                views = []
                for box, flipped in boxes:
                    x = crop_resize(clip[name], box, self.crop_size)
                    if flipped:
                        x = x.flip(-1) if name == "rgb" else hflip_flow(x)
                    views.append(x)
                out[name] = norm(torch.stack(views))
        return out


def build_transform(data_cfg: DataConfig, train: bool, views: int | None = None) -> TrainTransform | EvalTransform:
    """The transform the config describes; ``views`` overrides ``data_cfg.test_crops`` at test time."""
    if data_cfg.crop_size < 1 or data_cfg.scale_size < data_cfg.crop_size:
        raise ConfigError(f"config key 'data.scale_size' ({data_cfg.scale_size}) must be at least "
                          f"'data.crop_size' ({data_cfg.crop_size}), which must be positive")
    no_flip = data_cfg.dataset in NO_FLIP_DATASETS
    if train:
        if data_cfg.color_jitter < 0:
            raise ConfigError(f"config key 'data.color_jitter' must be >= 0, got {data_cfg.color_jitter}")
        if data_cfg.hflip and no_flip:
            log.warning("stfn: data.hflip is ignored for %s: a mirror changes the meaning of classes such as "
                        "'Pushing something from left to right', so it trains without flips, as TSM does",
                        data_cfg.dataset)
        return TrainTransform(data_cfg.crop_size, data_cfg.scale_size, data_cfg.color_jitter,
                              flip=data_cfg.hflip and not no_flip)
    views = data_cfg.test_crops if views is None else views
    if views not in VIEWS:
        raise ConfigError(f"config key 'data.test_crops' must be 1, 3 or 10, got {views}")
    if views == 10 and no_flip:
        raise ConfigError(f"10 test views (data.test_crops, --crops) hold 5 mirrored crops, which change the "
                          f"meaning of {data_cfg.dataset}'s left/right classes; use 1 or 3 (TSM: 3 crops)")
    return EvalTransform(data_cfg.crop_size, data_cfg.scale_size, views)
