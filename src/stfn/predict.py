"""One video in, top-k classes out: the whole chain of ``stfn prepare`` + evaluation, on the fly.

For each video, :class:`Predictor` does what training saw, in the same order and with the same code:

1. - 3. its reader (:class:`stfn.data.clip_reader.ClipReader`) takes the test positions, decodes only
   the frames they need, resized as the training videos were, and computes the optical flow of just the
   sampled fields with the training algorithm and bound (:mod:`stfn.data.prepare.record` says how the
   checkpoint's training data was prepared);
4. the evaluation transform (:func:`stfn.data.transforms.build_transform`: 1, 3 or 10 crops);
5. the network under ``torch.inference_mode`` (bf16 autocast where the CPU does bf16 natively), the
   logits averaged over views as :mod:`stfn.engine.evaluate` does, then softmax.

The network runs on one of :data:`BACKENDS` (``backend=``): ``eager`` (the default: no start-up cost),
``compile`` (the backbones compiled with ``torch.compile`` and inductor freezing: tens of seconds at
the first prediction, then faster), ``openvino`` (the backbones converted to OpenVINO, about 1.5-2 s
each, then the fastest measured on a CPU with native bf16: :mod:`stfn.engine.openvino`), ``onnx``
(the network exported to ONNX and run by ONNX Runtime on the CPU, fp32: a few seconds of export) or
``auto`` (``stfn predict``'s default: ``openvino`` where :func:`stfn.engine.backends.choose_backend`
finds it measured and repaid by the ``videos`` to predict, else ``eager``).
``benchmarks/predict_latency.py`` measures them side by side.

Example::

    predictor = Predictor.from_checkpoint("runs/ucf101/best.pt", crops=1)
    result = predictor.predict("v_Basketball_g01_c01.avi", top_k=5)
    result["top"][0]        # {"class": "Basketball", "index": 7, "prob": 0.93}
    result["timings"]       # {"decode": s, "flow": s, "transform": s, "network": s, "total": s}
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from stfn.config import STREAMS, Config, ConfigError
from stfn.data.clip_reader import ClipReader
from stfn.data.prepare.manifest import VIDEO_EXTENSIONS
from stfn.data.prepare.record import PrepareSettings, resolve_prepare_settings
from stfn.data.sampling import sample_clip
from stfn.data.transforms import build_transform
from stfn.data.video.decode import probe, read_frames, resize_shape
from stfn.data.video.flow import dequantize_flow, flow_to_color
from stfn.engine.backends import apply_backend, choose_backend
from stfn.engine.checkpoint import load_model
from stfn.engine.openvino import OPENVINO_HINT, openvino_available
from stfn.errors import ParameterError, StfnError
from stfn.export import export_model, require_onnxruntime
from stfn.runtime import describe_dtype, resolve_amp, resolve_device, score_clips, sync
from stfn.sharing import model_card

__all__ = ["BACKENDS", "PREDICT_FLAGS", "Predictor", "check_options", "expand_inputs", "window_starts"]

BACKENDS = ("auto", "eager", "compile", "onnx", "openvino")
PREDICT_FLAGS = {"device": "--device", "amp": "--amp", "backend": "--backend", "frames": "--frames"}  # stfn predict/serve


def check_options(device: str = "auto", amp: str = "auto", backend: str = "eager",
                  channels_last: bool = True) -> tuple[torch.device, torch.dtype | None]:
    """``(device, autocast dtype)`` of a :class:`Predictor` with these options, or a
    :class:`~stfn.errors.ParameterError` naming the parameter that is wrong (a command re-raises it with
    its flag, :func:`stfn.commands.flag_names`, and calls this before it loads anything)."""
    if backend not in BACKENDS:
        raise ParameterError("backend", f"must be one of {', '.join(BACKENDS)}, got '{backend}'")
    try:
        dev = resolve_device(device, what="device")
        dtype = resolve_amp(amp, dev, channels_last, what="amp")[0] if backend != "onnx" else None
    except ConfigError as e:  # resolve_* say "device ..." / "amp ...": the parameter, first
        name, _, problem = str(e).partition(" ")
        raise ParameterError(name, problem) from None
    if backend in ("onnx", "openvino") and dev.type != "cpu":
        raise ParameterError(("backend", "device"), f"must be {backend} and cpu together ({backend} runs on the "
                                                    f"CPU), got {backend} and '{dev}'")
    if backend == "openvino" and not openvino_available():
        raise ParameterError("backend", f"is openvino, but the openvino package is not installed; {OPENVINO_HINT}")
    return dev, dtype


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
        video_backend: decoder for :mod:`stfn.data.video.decode` (default: ``$STFN_VIDEO_BACKEND``, else
            ``pyav``: importing torchcodec costs seconds, more than a whole prediction of a short clip).
        chunk_frames: frames per network call; views are batched up to this many (memory bound).
        backend: ``auto | eager | compile | onnx | openvino`` (module docstring); ``onnx`` runs on the CPU
            in fp32, ``openvino`` on the CPU in the autocast dtype; ``self.backend`` is the one chosen.
        videos: how many videos the predictor will see, for ``auto`` (its conversion must pay).
        parallel: how many threads will call it at once (``stfn serve``'s workers; OpenVINO gives each
            its own stream).
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
        backend: str = "eager",
        videos: int = 1,
        parallel: int = 1,
    ) -> None:
        self.channels_last = cfg.train.channels_last if channels_last is None else bool(channels_last)
        self.device, self.amp_dtype = check_options(device, amp, backend, self.channels_last)
        self.backend = backend
        self.model = model.eval().to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.cfg, self.classes = cfg, list(classes)
        self.streams = [s for s in getattr(model, "streams", cfg.model.streams) if s in STREAMS]
        self.crops = int(crops or cfg.data.test_crops)
        self.transform = build_transform(cfg.data, train=False, views=self.crops)
        self.chunk_frames = max(1, int(chunk_frames))
        self.reader = ClipReader(prepare, self.streams, int(cfg.data.frames if frames is None else frames),
                                 int(getattr(model, "flow_length", cfg.model.flow_length)),
                                 video_backend or os.environ.get("STFN_VIDEO_BACKEND") or "pyav", self.device)
        if len(self.classes) != cfg.model.num_classes:
            raise StfnError(f"the checkpoint names {len(self.classes)} classes but its model has {cfg.model.num_classes} outputs")
        self._session: Any = None
        if backend == "onnx":
            self._session = self._onnx_session()
        else:  # auto: OpenVINO where it was measured fastest and `videos` repay its conversion, else eager
            work = max(1, int(videos)) * self.crops * self.reader.frames
            chosen = choose_backend(backend, self.model, self.device, work, cfg.data.crop_size, False)
            self.backend = apply_backend(self.model, chosen, self.amp_dtype, parallel)

    def _onnx_session(self) -> Any:
        """The network exported to ONNX for this predictor's ``T`` and crop size, in an ONNX Runtime
        session with as many threads as torch uses (the file is written to a temporary folder and read
        back; nothing stays on disk)."""
        ort = require_onnxruntime()
        with tempfile.TemporaryDirectory(prefix="stfn-onnx-") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the exporter's constant-folding notes: not news
            path = export_model(self.model, Path(tmp) / "model.onnx", fmt="onnx", streams=self.streams,
                                frames=self.reader.frames, size=self.cfg.data.crop_size,
                                flow_length=self.reader.flow_length)
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            return ort.InferenceSession(path.read_bytes(), options, providers=["CPUExecutionProvider"])

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, flow: str | None = None, **kwargs: Any) -> Predictor:
        """Load ``path`` (``weights_only``, via :func:`stfn.engine.checkpoint.load_model`); ``kwargs`` as in the class."""
        model, cfg, ckpt = load_model(path, map_location="cpu")
        predictor = cls(model, cfg, list(ckpt["classes"]), resolve_prepare_settings(cfg, ckpt, flow), **kwargs)
        predictor.card = model_card(cfg, ckpt)
        return predictor

    card: dict[str, Any] | None = None  # model_card() of the checkpoint, set by from_checkpoint

    def settings(self) -> dict[str, Any]:
        """What this predictor does, for logs and JSON output."""
        prepare = self.reader.prepare
        return {
            "streams": self.streams,
            "frames": self.reader.frames,
            "flow_length": self.reader.flow_length,
            "crops": self.crops,
            "crop_size": self.cfg.data.crop_size,
            "scale_size": self.cfg.data.scale_size,
            "resize": {"short_side": prepare.short_side} if prepare.short_side
            else {"size": list(prepare.size)} if prepare.size else {},
            "flow": {**prepare.flow, "bound": prepare.bound} if "flow" in self.streams else None,
            "prepare_source": prepare.source,
            "device": str(self.device),
            "amp": describe_dtype(self.amp_dtype),
            "channels_last": self.channels_last,
            "video_backend": self.reader.video_backend,
            "backend": self.backend,
        }

    @torch.inference_mode()
    def scores(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(K,)`` averaged over views, from float ``(V, T, C, S, S)`` per stream."""
        if self._session is not None:
            n = next(iter(views.values())).shape[0]
            step = max(1, self.chunk_frames // max(1, self.reader.frames))
            outs = [self._session.run(["logits"], {s: views[s][i:i + step].numpy() for s in self.streams})[0]
                    for i in range(0, n, step)]
            return torch.from_numpy(np.concatenate(outs)).float().mean(dim=0)
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
        clip = self.reader.load_clip(path, timings)
        return self._classify(path, clip, timings, start, top_k)

    def _probabilities(self, clip: dict[str, Any], timings: dict[str, float] | None = None) -> torch.Tensor:
        """Class probabilities ``(K,)`` of one clip's uint8 inputs (crops, network, softmax)."""
        timings = {} if timings is None else timings
        t = time.perf_counter()
        views = self.transform({s: clip[s] for s in self.streams})
        timings["transform"] = time.perf_counter() - t
        sync(self.device)
        t = time.perf_counter()
        logits = self.scores(views)
        sync(self.device)
        timings["network"] = time.perf_counter() - t
        return logits.softmax(dim=0)

    def _classify(self, path: str | os.PathLike, clip: dict[str, Any], timings: dict[str, float], start: float,
                  top_k: int) -> dict[str, Any]:
        """The :meth:`predict` result of a loaded clip."""
        probs = self._probabilities(clip, timings)
        timings["total"] = time.perf_counter() - start
        k = max(1, min(int(top_k), len(self.classes)))
        values, indices = probs.topk(k)
        note = {"note": clip["note"]} if clip.get("note") else {}
        return {
            **note,
            "video": str(path),
            "ok": True,
            "frames": int(clip["num_frames"]),
            "fps": float(clip["fps"]),
            "top": [{"class": self.classes[i], "index": int(i), "prob": float(p)} for p, i in zip(values.tolist(), indices.tolist(), strict=True)],
            "timings": {k: round(v, 6) for k, v in timings.items()},
        }

    def with_crops(self, crops: int) -> Predictor:
        """This predictor with ``crops`` test views (1, 3 or 10); the network and the reader are shared."""
        if int(crops) == self.crops:
            return self
        other = copy.copy(self)
        other.crops = int(crops)
        other.transform = build_transform(self.cfg.data, train=False, views=other.crops)
        return other

    def explain(self, path: str | os.PathLike, top_k: int = 5, *, window: int | None = None,
                stride: int | None = None, max_windows: int = 12, thumb_height: int = 96) -> dict[str, Any]:
        """:meth:`predict`, plus what the network was given and where in the video each class is supported.

        Returns the :meth:`predict` result (the same top-k: the same frames, flow and network) with:

        - ``positions``: the T sampled frame indices (0-based);
        - ``thumbnails``: T RGB uint8 arrays ``(thumb_height, w, 3)``, the decoded frame at each position;
        - ``flow_images``: T RGB uint8 arrays of the same size, the middle flow field of each position's
          stack in the colour wheel (:func:`stfn.data.video.flow.flow_to_color`), or ``None`` without a flow stream;
          ``flow_max``: the magnitude (pixels) drawn at full brightness, shared by the strip (the 99th
          percentile of its magnitudes, at least 1 pixel);
        - ``windows``: the model applied to sliding windows of the video (T positions inside each):
          ``{"window", "stride"}`` in frames, ``"starts"`` (first frame of each), ``"probs"`` (W x K);
        - ``timings`` also holds ``windows`` (seconds for all of them).

        ``window`` defaults to a quarter of the video (at least T frames), ``stride`` to half a window,
        raised so that there are at most ``max_windows``.
        """
        if Path(path).is_dir():
            raise StfnError(f"folder '{path}' holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
        reader = self.reader if "rgb" in self.streams else ClipReader(
            self.reader.prepare, ["rgb", *self.streams], self.reader.frames, self.reader.flow_length,
            self.reader.video_backend, self.device)  # a flow-only model: decode the frames to show them
        timings: dict[str, float] = {}
        start = time.perf_counter()
        clip = reader.load_clip(path, timings)
        result = self._classify(path, clip, timings, start, top_k)
        n = int(clip["num_frames"])
        idx = sample_clip(n, max(n - 1, 0), self.reader.frames, self.reader.flow_length, train=False)
        thumbs = [_thumbnail(f.permute(1, 2, 0).numpy(), thumb_height) for f in clip["rgb"]]
        flows, flow_max = None, None
        if "flow" in self.streams:
            mid = self.reader.flow_length // 2
            fields = [dequantize_flow(s[2 * mid : 2 * mid + 2].permute(1, 2, 0).numpy(), self.reader.prepare.bound)
                      for s in clip["flow"]]
            flow_max = max(1.0, float(np.percentile(np.hypot(np.stack(fields)[..., 0], np.stack(fields)[..., 1]), 99)))
            flows = [_thumbnail(flow_to_color(f, flow_max), thumb_height) for f in fields]
        t = time.perf_counter()
        windows = self._window_probs(path, n, window, stride, max_windows)
        result["timings"]["windows"] = round(time.perf_counter() - t, 6)
        return {**result, "positions": list(idx.positions), "thumbnails": thumbs, "flow_images": flows,
                "flow_max": flow_max, "windows": windows}

    def _window_probs(self, path: str | os.PathLike, n: int, window: int | None, stride: int | None,
                      max_windows: int) -> dict[str, Any]:
        """Probabilities ``(W, K)`` of the sliding windows of an ``n``-frame video (see :meth:`explain`)."""
        window = max(1, min(n, int(window) if window else max(self.reader.frames, n // 4)))
        stride = max(1, int(stride) if stride else window // 2)
        starts = window_starts(n, window, stride, max_windows)
        stride = starts[1] - starts[0] if len(starts) > 1 else stride
        per_window = []
        for s in starts:
            idx = sample_clip(window, max(window - 1, 0), self.reader.frames, self.reader.flow_length, train=False)
            per_window.append(([s + i for i in idx.rgb], [[s + k for k in st] for st in idx.flow]))
        needed: set[int] = set()
        for rgb, stacks in per_window:
            needed.update(rgb if "rgb" in self.streams else [])
            if "flow" in self.streams:
                needed.update(i for st in stacks for k in st for i in (k, k + 1))
        info = probe(path)
        size = resize_shape(info.width, info.height, short_side=self.reader.prepare.short_side,
                            size=self.reader.prepare.size)
        order = sorted(needed)
        frames = read_frames(path, order, size=size, backend=self.reader.video_backend)
        at = {k: i for i, k in enumerate(order)}
        probs = []
        for rgb, stacks in per_window:
            clip: dict[str, Any] = {}
            if "rgb" in self.streams:
                clip["rgb"] = torch.from_numpy(np.ascontiguousarray(frames[[at[i] for i in rgb]])).permute(0, 3, 1, 2)
            if "flow" in self.streams:
                clip["flow"] = self.reader._flow_stacks(frames, at, stacks)  # the reader's own flow code
            probs.append([round(float(p), 6) for p in self._probabilities(clip).tolist()])
        return {"window": window, "stride": stride, "starts": starts, "probs": probs}

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


def window_starts(n: int, window: int, stride: int, max_windows: int = 12) -> list[int]:
    """First frames of the sliding windows of ``window`` frames every ``stride`` over ``n`` frames.

    The last window ends at the last frame (no frame left out); when that would take more than
    ``max_windows`` windows, the windows are spread evenly instead (a longer stride).
    """
    if window >= n:
        return [0]
    last = n - window
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    if len(starts) > max(1, max_windows):
        count = max(2, max_windows)
        starts = sorted({round(i * last / (count - 1)) for i in range(count)})
    return starts


def _thumbnail(image: np.ndarray, height: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 scaled to ``height`` rows, aspect kept."""
    h, w = image.shape[:2]
    if h == height:
        return np.ascontiguousarray(image)
    width = max(1, round(w * height / h))
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)
