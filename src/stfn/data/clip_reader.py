"""One video file in, the uint8 inputs of its sampled positions out, computed on the fly as training saw them.

:class:`ClipReader` does, for one video, what ``stfn prepare`` and the test-mode dataset did for the
training videos, with the same code and in the same order:

1. test positions (:func:`stfn.data.sampling.sample_clip`, ``train=False``): ``T`` segment centres and,
   for the motion stream, a stack of ``L`` flow fields around each;
2. decode only the frames those need (:func:`stfn.data.video.decode.read_frames`), resized as ``stfn prepare``
   resized the training videos (:class:`~stfn.data.prepare.record.PrepareSettings`);
3. optical flow of just the sampled fields (:func:`stfn.data.video.flow.create_estimator`, the training
   algorithm), quantised to uint8 with the training bound (:func:`stfn.data.video.flow.quantize_flow`), so the
   network sees the input distribution it was trained on; no flow without a flow stream.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stfn.data.prepare.record import PrepareSettings
from stfn.data.sampling import ClipIndices, sample_clip
from stfn.data.video.decode import count_packets, probe, read_frames, read_video, resize_shape
from stfn.data.video.flow import FlowEstimator, create_estimator, quantize_flow
from stfn.errors import ParameterError, StfnError

__all__ = ["ClipReader"]


def _consecutive_runs(fields: list[int]) -> list[tuple[int, int]]:
    """Sorted unique field indices -> the maximal runs ``(first, last)`` of consecutive indices (each
    run's flow is estimated in one call, on frames ``first .. last + 1``)."""
    runs: list[tuple[int, int]] = []
    for k in fields:
        if runs and k == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], k)
        else:
            runs.append((k, k))
    return runs


class ClipReader:
    """Reads the inputs of ``frames`` test positions of a video for the given streams.

    Args:
        prepare: resize and flow settings of the training data.
        streams: ``rgb`` and/or ``flow``.
        frames: T positions per video.
        flow_length: L flow fields per position.
        video_backend: decoder for :mod:`stfn.data.video.decode` (``pyav`` or ``torchcodec``).
        device: where RAFT runs, when the training flow is RAFT.
    """

    def __init__(self, prepare: PrepareSettings, streams: Sequence[str], frames: int, flow_length: int,
                 video_backend: str = "pyav", device: torch.device | str = "cpu") -> None:
        if frames < 1:
            raise ParameterError("frames", f"must be at least 1, got {frames}")
        self.prepare, self.streams = prepare, list(streams)
        self.frames, self.flow_length = int(frames), int(flow_length)
        self.video_backend, self.device = video_backend, str(device)
        self._raft: FlowEstimator | None = None

    def load_clip(self, path: str | os.PathLike, timings: dict[str, float] | None = None) -> dict[str, Any]:
        """Decode and compute the inputs of one video, before crops: ``{"rgb": uint8 (T, 3, H, W),
        "flow": uint8 (T, 2L, H, W), "num_frames": N, "fps": float}`` (only the reader's streams), and
        ``"note"`` when the header's frame count was wrong. ``N`` is the header's count when the
        demuxed packets agree with it, else what a full decode finds (as ``stfn prepare`` counts).

        ``timings`` (if given) receives ``decode`` and ``flow`` seconds.
        """
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        info = probe(path)
        size = resize_shape(info.width, info.height, short_side=self.prepare.short_side, size=self.prepare.size)
        n = info.frames
        decoded: np.ndarray | None = None
        header_wrong = info.frames_exact and n >= 1 and count_packets(path) != n
        if not info.frames_exact or n < 1 or header_wrong:  # estimated or wrong count: decode all, as prepare
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
        if header_wrong:
            clip["note"] = f"its header says {info.frames} frames but {n} decode: sampled from all {n}"
        if "rgb" in self.streams:
            rgb = frames[[at[p] for p in idx.rgb]]  # (T, H, W, 3)
            clip["rgb"] = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).contiguous()
        t1 = time.perf_counter()
        if "flow" in self.streams:
            clip["flow"] = self._flow_stacks(frames, at, idx.flow)
        timings["flow"] = time.perf_counter() - t1
        return clip

    def _indices(self, n: int) -> tuple[ClipIndices, list[int]]:
        """Sampled indices for an ``n``-frame video and the sorted frames they need."""
        idx = sample_clip(n, max(n - 1, 0), self.frames, self.flow_length, train=False)
        needed: set[int] = set(idx.rgb) if "rgb" in self.streams else set()
        if "flow" in self.streams:
            for stack in idx.flow:
                for k in stack:
                    needed.update((k, k + 1))  # field k: frame k -> frame k + 1
        return idx, sorted(needed)

    def flow_estimator(self) -> FlowEstimator:
        """The flow estimator for one video. OpenCV's DIS keeps a lowered pyramid depth after it has
        seen a small frame (10x slower and different flow on later, larger frames), so OpenCV
        estimators are built fresh per video, as a fresh ``stfn prepare`` worker would; RAFT (weights,
        no per-size state) is built once."""
        algo, opts = self.prepare.flow.get("algorithm", "dis"), self.prepare.flow_options()
        if algo != "raft":
            return create_estimator(algo, **opts)
        if self._raft is None:
            self._raft = create_estimator(algo, **opts, device=self.device)
        return self._raft

    def _flow_stacks(self, frames: np.ndarray, at: dict[int, int], stacks: list[list[int]]) -> torch.Tensor:
        """Quantised flow ``(T, 2L, H, W)`` uint8 (x1, y1, x2, y2, ...) of the sampled stacks only."""
        h, w = frames.shape[1:3]
        L = self.flow_length
        if not any(stacks):  # a one-frame video has no flow: zero motion, as the dataset does
            return torch.full((len(stacks), 2 * L, h, w), 128, dtype=torch.uint8)
        estimator = self.flow_estimator()
        fields: dict[int, np.ndarray] = {}
        for first, last in _consecutive_runs(sorted({k for s in stacks for k in s})):
            run = frames[[at[i] for i in range(first, last + 2)]]  # frames first .. last + 1
            flow = quantize_flow(estimator(run), self.prepare.bound)  # (last - first + 1, H, W, 2)
            for j in range(len(flow)):
                fields[first + j] = flow[j]
        out = np.stack([np.concatenate([fields[k].transpose(2, 0, 1) for k in s]) for s in stacks])
        return torch.from_numpy(out)
