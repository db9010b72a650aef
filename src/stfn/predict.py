"""One video in, top-k classes out: the whole chain of ``stfn prepare`` + evaluation, on the fly.

For each video, :class:`Predictor` does what training saw, in the same order and with the same code:

1. test positions as in evaluation (:func:`stfn.data.sampling.sample_clip`, ``train=False``): ``T``
   segment centres and, for the motion stream, a stack of ``L`` flow fields around each;
2. decode only the frames those need (:func:`stfn.data.video.read_frames`), resized as ``stfn prepare``
   resized them (its manifest's ``resize``, else a short side of ``data.scale_size``);
3. optical flow of just the sampled fields (:func:`stfn.data.flow.create_estimator`, the training
   algorithm), quantised to uint8 with the training bound (:func:`stfn.data.flow.quantize_flow`), so the
   network sees the input distribution it was trained on; no flow for a model without a flow stream;
4. the evaluation transform (:func:`stfn.data.transforms.build_transform`: 1, 3 or 10 crops);
5. the network under ``torch.inference_mode`` (bf16 autocast where the CPU does bf16 natively), the
   logits averaged over views as :mod:`stfn.engine.evaluate` does, then softmax.

Example::

    predictor = Predictor.from_checkpoint("runs/ucf101/best.pt", crops=1)
    result = predictor.predict("v_Basketball_g01_c01.avi", top_k=5)
    result["top"][0]        # {"class": "Basketball", "index": 7, "prob": 0.93}
    result["timings"]       # {"decode": s, "flow": s, "transform": s, "network": s, "total": s}
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stfn.config import Config
from stfn.data.flow import flow_name, parse_flow_spec, recorded_options
from stfn.data.manifest import VIDEO_EXTENSIONS
from stfn.errors import StfnError
from stfn.runtime import describe_dtype, resolve_amp, resolve_device, score_clips, sync

__all__ = [
    "VIDEO_EXTENSIONS",
    "PrepareSettings",
    "Predictor",
    "expand_inputs",
    "parse_flow_spec",
    "resolve_prepare_settings",
]


@dataclass(frozen=True)
class PrepareSettings:
    """How the training data was prepared: frame resize and optical flow, and where that was read from."""

    short_side: int | None = None  # resize to this short side (aspect kept) ...
    size: tuple[int, int] | None = None  # ... or to exactly (W, H); neither: keep the source size
    flow: dict[str, Any] = field(default_factory=dict)  # {"algorithm": ..., options (preset, ...)}
    bound: float = 20.0  # flow clipping bound of the quantisation
    source: str = "defaults"  # where each came from, for the logs

    def flow_options(self) -> dict[str, Any]:
        return recorded_options(self.flow)

    def flow_name(self) -> str:
        return flow_name(self.flow)


def _prepare_records(cfg: Config, checkpoint: dict[str, Any]) -> list[tuple[dict, str]]:
    """``({"flow": ..., "resize": ...}, where)`` records of how the training data was prepared, best first."""
    from stfn.data.manifest import load_manifest

    records = []
    if isinstance(checkpoint.get("prepare"), dict):
        records.append((checkpoint["prepare"], "the checkpoint"))
    if cfg.data.root and Path(cfg.data.root).is_dir():
        try:
            m = load_manifest(cfg.data.root)
            records.append(({"flow": m.flow, "resize": m.resize}, f"the manifest in '{cfg.data.root}'"))
        except StfnError:
            pass  # no (valid) manifest there any more: fall back to the config
    return records


def resolve_prepare_settings(cfg: Config, checkpoint: dict[str, Any], flow: str | None = None) -> PrepareSettings:
    """Resize and flow settings of the training data. Each is taken from the first of: ``flow``
    (``--flow ALGO[:OPTION]``, algorithm only; the bound stays the training one), the checkpoint
    (``checkpoint["prepare"]``, ``{"flow", "resize"}`` as in the manifest), the ``stfn prepare`` manifest in ``data.root`` when it still exists, and last the
    defaults: short side ``data.scale_size``, :mod:`stfn.data.flow`'s default algorithm and bound.
    A recorded ``resize`` of ``{}`` means the frames kept their source size.
    """
    from stfn.data.flow import DEFAULT_ALGORITHM, DEFAULT_BOUND, DEFAULT_DIS_PRESET

    records = _prepare_records(cfg, checkpoint)
    short, size, sources = cfg.data.scale_size, None, ["resize to data.scale_size"]
    resize = next(((r["resize"], src) for r, src in records if isinstance(r.get("resize"), dict)), None)
    if resize:
        short, size = resize[0].get("short_side"), resize[0].get("size")
        short, size = (int(short) if short else None), (tuple(int(v) for v in size) if size else None)
        sources = [f"resize from {resize[1]}"]
    flow_rec = next(((r["flow"], src) for r, src in records
                     if isinstance(r.get("flow"), dict) and r["flow"].get("algorithm") not in (None, "none")), None)
    if flow_rec:
        flow_dict = dict(flow_rec[0])
        sources.append(f"flow from {flow_rec[1]}")
    else:
        flow_dict = {"algorithm": DEFAULT_ALGORITHM, "preset": DEFAULT_DIS_PRESET, "bound": DEFAULT_BOUND}
        sources.append("default flow")
    bound = float(flow_dict.pop("bound", None) or DEFAULT_BOUND)
    if flow:
        flow_dict = parse_flow_spec(flow)
        sources[-1] = "flow from --flow"
    return PrepareSettings(short, size, flow_dict, bound, "; ".join(sources))


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder becomes the videos below it (recursively, sorted, by extension).

    A folder without videos, and a path that does not exist, are kept as they are, so that they get
    their own error line when predicted.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            out.extend(found or [p])
        else:
            out.append(p)
    return out


def _runs(fields: list[int]) -> list[tuple[int, int]]:
    """Sorted unique field indices -> maximal runs ``(first, last)`` of consecutive indices."""
    runs: list[tuple[int, int]] = []
    for k in fields:
        if runs and k == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], k)
        else:
            runs.append((k, k))
    return runs


class Predictor:
    """A loaded network plus everything needed to turn a video file into its input batch.

    Args:
        model: a :mod:`stfn.models` network (``streams``, ``flow_length``).
        cfg: the resolved training config (``data.frames``, ``data.crop_size``, ...).
        classes: class names, index = label.
        prepare: resize and flow settings of the training data (:func:`resolve_prepare_settings`).
        frames: T positions per video (default ``data.frames``).
        crops: test views, 1, 3 or 10 (default ``data.test_crops``).
        device: ``auto | cpu | cuda | cuda:N``.
        amp: ``auto | none | bf16 | fp16`` (see :func:`resolve_amp`).
        channels_last: NHWC weights, as evaluation uses them (default ``train.channels_last``).
        video_backend: decoder for :mod:`stfn.data.video` (default: ``$STFN_VIDEO_BACKEND``, else
            ``pyav``: importing torchcodec costs seconds, more than a whole prediction of a short clip).
        chunk_frames: frames per network call; views are batched up to this many (memory bound).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: Config,
        classes: list[str],
        prepare: PrepareSettings,
        *,
        frames: int | None = None,
        crops: int | None = None,
        device: str = "auto",
        amp: str = "auto",
        channels_last: bool | None = None,
        video_backend: str | None = None,
        chunk_frames: int = 256,
    ) -> None:
        from stfn.data.transforms import build_transform

        self.device = resolve_device(device, what="--device")
        self.channels_last = cfg.train.channels_last if channels_last is None else bool(channels_last)
        self.amp_dtype = resolve_amp(amp, self.device, self.channels_last, what="--amp")[0]
        self.model = model.eval().to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.cfg, self.classes, self.prepare = cfg, list(classes), prepare
        self.streams = [s for s in getattr(model, "streams", cfg.model.streams) if s in ("rgb", "flow")]
        self.flow_length = int(getattr(model, "flow_length", cfg.model.flow_length))
        self.frames = int(frames or cfg.data.frames)
        if self.frames < 1:
            raise StfnError(f"--frames must be at least 1, got {self.frames}")
        self.crops = int(crops or cfg.data.test_crops)
        self.transform = build_transform(cfg.data, train=False, views=self.crops)
        self.chunk_frames = max(1, int(chunk_frames))
        self._raft = None
        self.video_backend = video_backend or os.environ.get("STFN_VIDEO_BACKEND") or "pyav"
        if len(self.classes) != cfg.model.num_classes:
            raise StfnError(f"the checkpoint names {len(self.classes)} classes but its model has {cfg.model.num_classes} outputs")

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, flow: str | None = None, **kwargs: Any) -> Predictor:
        """Load ``path`` (``weights_only``, via :func:`stfn.engine.checkpoint.load_model`); ``kwargs`` as in the class."""
        from stfn.engine.checkpoint import load_model

        model, cfg, ckpt = load_model(path, map_location="cpu")
        return cls(model, cfg, list(ckpt["classes"]), resolve_prepare_settings(cfg, ckpt, flow), **kwargs)

    def settings(self) -> dict[str, Any]:
        """What this predictor does, for logs and JSON output."""
        return {
            "streams": self.streams,
            "frames": self.frames,
            "flow_length": self.flow_length,
            "crops": self.crops,
            "crop_size": self.cfg.data.crop_size,
            "scale_size": self.cfg.data.scale_size,
            "resize": {"short_side": self.prepare.short_side} if self.prepare.short_side
            else {"size": list(self.prepare.size)} if self.prepare.size else {},
            "flow": {**self.prepare.flow, "bound": self.prepare.bound} if "flow" in self.streams else None,
            "prepare_source": self.prepare.source,
            "device": str(self.device),
            "amp": describe_dtype(self.amp_dtype),
            "channels_last": self.channels_last,
            "video_backend": self.video_backend,
        }

    # --- one video -> uint8 clip ----------------------------------------------------------------

    def load_clip(self, path: str | os.PathLike, timings: dict[str, float] | None = None) -> dict[str, Any]:
        """Decode and compute the inputs of one video, before crops: ``{"rgb": uint8 (T, 3, H, W),
        "flow": uint8 (T, 2L, H, W), "num_frames": N, "fps": float}`` (only the model's streams).

        ``timings`` (if given) receives ``decode`` and ``flow`` seconds.
        """
        from stfn.data.video import probe, read_frames, read_video, resize_shape

        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        info = probe(path)
        size = resize_shape(info.width, info.height, short_side=self.prepare.short_side, size=self.prepare.size)
        n = info.frames
        decoded: np.ndarray | None = None
        if not info.frames_exact or n < 1:  # estimated count: decode all to know it
            decoded = read_video(path, size=size, backend=self.video_backend)
            n = len(decoded)
        idx, needed = self._indices(n)
        if decoded is None:
            try:
                frames = read_frames(path, needed, size=size, backend=self.video_backend)
            except StfnError as e:
                if "out of range" not in str(e):  # corrupt: report; header count too high: decode all
                    raise
                decoded = read_video(path, size=size, backend=self.video_backend)
                n = len(decoded)
                idx, needed = self._indices(n)
        if decoded is not None:
            frames = decoded[needed]
        at = {k: i for i, k in enumerate(needed)}
        timings["decode"] = time.perf_counter() - t0
        clip: dict[str, Any] = {"num_frames": n, "fps": info.fps}
        if "rgb" in self.streams:
            rgb = frames[[at[p] for p in idx.rgb]]  # (T, H, W, 3)
            clip["rgb"] = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).contiguous()
        t1 = time.perf_counter()
        if "flow" in self.streams:
            clip["flow"] = self._flow_stacks(frames, at, idx.flow)
        timings["flow"] = time.perf_counter() - t1
        return clip

    def _indices(self, n: int):
        """Sampled indices for an ``n``-frame video and the sorted frames they need."""
        from stfn.data.sampling import sample_clip

        idx = sample_clip(n, max(n - 1, 0), self.frames, self.flow_length, train=False)
        needed: set[int] = set(idx.rgb) if "rgb" in self.streams else set()
        if "flow" in self.streams:
            for stack in idx.flow:
                for k in stack:
                    needed.update((k, k + 1))  # field k: frame k -> frame k + 1
        return idx, sorted(needed)

    def _flow_estimator(self):
        """The flow estimator for one video. OpenCV's DIS keeps a lowered pyramid depth after it has
        seen a small frame (10x slower and different flow on later, larger frames), so OpenCV
        estimators are built fresh per video, as a fresh ``stfn prepare`` worker would; RAFT (weights,
        no per-size state) is built once."""
        from stfn.data.flow import create_estimator

        algo, opts = self.prepare.flow.get("algorithm", "dis"), self.prepare.flow_options()
        if algo != "raft":
            return create_estimator(algo, **opts)
        if self._raft is None:
            self._raft = create_estimator(algo, **opts, device=str(self.device))
        return self._raft

    def _flow_stacks(self, frames: np.ndarray, at: dict[int, int], stacks: list[list[int]]) -> torch.Tensor:
        """Quantised flow ``(T, 2L, H, W)`` uint8 (x1, y1, x2, y2, ...) of the sampled stacks only."""
        from stfn.data.flow import quantize_flow

        h, w = frames.shape[1:3]
        L = self.flow_length
        if not any(stacks):  # a one-frame video has no flow: zero motion, as the dataset does
            return torch.full((len(stacks), 2 * L, h, w), 128, dtype=torch.uint8)
        estimator = self._flow_estimator()
        fields: dict[int, np.ndarray] = {}
        for first, last in _runs(sorted({k for s in stacks for k in s})):
            run = frames[[at[i] for i in range(first, last + 2)]]  # frames first .. last + 1
            flow = quantize_flow(estimator(run), self.prepare.bound)  # (last - first + 1, H, W, 2)
            for j in range(len(flow)):
                fields[first + j] = flow[j]
        out = np.stack([np.concatenate([fields[k].transpose(2, 0, 1) for k in s]) for s in stacks])
        return torch.from_numpy(out)

    # --- clip -> scores ---------------------------------------------------------------------------

    @torch.inference_mode()
    def scores(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(K,)`` averaged over views, from float ``(V, T, C, S, S)`` per stream."""
        logits, _ = score_clips(self.model, {s: views[s] for s in self.streams}, self.device, self.amp_dtype,
                                self.chunk_frames)
        return logits.mean(dim=0)

    def predict(self, path: str | os.PathLike, top_k: int = 5) -> dict[str, Any]:
        """Top-``top_k`` classes of one video: ``{"video", "ok": True, "frames", "top": [{"class",
        "index", "prob"}], "timings": {"decode", "flow", "transform", "network", "total"}}`` (seconds).

        Raises :class:`~stfn.errors.StfnError` (e.g. ``VideoError``) for a file that cannot be read.
        """
        if Path(path).is_dir():
            raise StfnError(f"folder '{path}' holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        clip = self.load_clip(path, timings)
        t = time.perf_counter()
        views = self.transform({s: clip[s] for s in self.streams})
        timings["transform"] = time.perf_counter() - t
        sync(self.device)
        t = time.perf_counter()
        logits = self.scores(views)
        sync(self.device)
        timings["network"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - start
        probs = logits.softmax(dim=0)
        k = max(1, min(int(top_k), len(self.classes)))
        values, indices = probs.topk(k)
        return {
            "video": str(path),
            "ok": True,
            "frames": int(clip["num_frames"]),
            "fps": float(clip["fps"]),
            "top": [{"class": self.classes[i], "index": int(i), "prob": float(p)} for p, i in zip(values.tolist(), indices.tolist(), strict=True)],
            "timings": {k: round(v, 6) for k, v in timings.items()},
        }

    def predict_many(self, paths: Iterable[str | os.PathLike], top_k: int = 5) -> Iterator[dict[str, Any]]:
        """:meth:`predict` each path; a file that fails gives ``{"video", "ok": False, "error"}`` and the
        others still run. Errors a user can cause give their own sentence; any other exception from a
        decoder or flow library is reported with its type, so one bad file never stops the batch."""
        for p in paths:
            try:
                yield self.predict(p, top_k)
            except StfnError as e:
                yield {"video": str(p), "ok": False, "error": str(e)}
            except Exception as e:  # a decoder or flow library failing on this one file (cv2.error, ...)
                yield {"video": str(p), "ok": False, "error": f"'{p}' could not be processed ({type(e).__name__}: {e})"}

