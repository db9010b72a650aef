"""Whole-video sampling: which frames and flow fields a sample of ``T`` positions reads.

STFN looks at the entire video, so the ``T`` positions are spread over all of it: the video's
``N`` frames are cut into ``T`` equal segments and one position is taken in each. TSN's K-segment
sampling is the same rule with ``T = K``.

- test (``train=False``): the centre of each segment, ``p_t = floor((t + 0.5) * N / T)``;
- train: a uniform random point of each segment, ``p_t = floor((t + u_t) * N / T)``, ``u_t ~ U[0, 1)``
  drawn from the given ``torch.Generator`` (so a seeded generator reproduces the sample).

Indices are 0-based here; file names are 1-based (``img_{p+1:05d}.jpg``, ``flow_x_{k+1:05d}.jpg``).

Flow field ``k`` is the motion from frame ``k`` to frame ``k + 1``. The flow stack at position ``p``
holds ``L`` consecutive fields centred on frame ``p``: it starts at ``p - L // 2``, shifted to stay
inside ``[0, F - L]`` near either end of the video (``F`` fields, usually ``N - 1``), so the RGB frame and
the flow stack of a position describe the same moment. For even ``L`` the stack spans frames
``p - L/2 .. p + L/2`` (``L/2`` fields before frame ``p``, ``L/2`` after); for odd ``L`` field ``p`` (frame
``p`` to ``p + 1``) is its middle one.

Short videos, never an index error:

- ``N < T``: segments are shorter than a frame, so positions repeat (still in order);
- ``F < L``: the stack holds fields ``0 .. F - 1`` and then repeats the last one up to ``L``;
- ``F = 0`` (a one-frame video): the stack is empty; the dataset fills it with zero motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ClipIndices", "flow_stack", "sample_clip", "segment_positions"]


@dataclass(frozen=True)
class ClipIndices:
    """0-based indices of one sample: ``positions`` (T,), ``rgb`` (T,), ``flow`` (T lists of L fields)."""

    positions: list[int]
    rgb: list[int]
    flow: list[list[int]]


def segment_positions(num_frames: int, count: int, train: bool, generator: torch.Generator | None = None) -> list[int]:
    """``count`` non-decreasing positions in ``range(num_frames)``, one per equal segment.

    ``train=False`` gives segment centres; ``train=True`` a random point of each segment, drawn from
    ``generator`` (the global torch RNG when ``None``).
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if count < 1:
        raise ValueError(f"the number of positions must be at least 1, got {count}")
    if not train:
        return [(2 * t + 1) * num_frames // (2 * count) for t in range(count)]
    u = torch.rand(count, generator=generator, dtype=torch.float64).tolist()
    return [min(int((t + u[t]) * num_frames / count), num_frames - 1) for t in range(count)]


def flow_stack(position: int, num_flows: int, length: int) -> list[int]:
    """The ``length`` flow-field indices of the stack centred on frame ``position`` (rules above)."""
    if length < 1:
        raise ValueError(f"flow_length must be at least 1, got {length}")
    if num_flows < 1:
        return []
    start = min(max(position - length // 2, 0), max(num_flows - length, 0))
    return [min(start + j, num_flows - 1) for j in range(length)]


def sample_clip(
    num_frames: int,
    num_flows: int,
    count: int,
    flow_length: int,
    train: bool,
    generator: torch.Generator | None = None,
) -> ClipIndices:
    """Positions, RGB frame indices and flow stacks of one sample of a video.

    Args:
        num_frames: N, decoded frames of the video (``frames`` in the manifest).
        num_flows: F, flow fields (``flows`` in the manifest, normally ``N - 1``).
        count: T, positions over the whole video.
        flow_length: L, consecutive flow fields per position.
        train: random offset per segment (True) or segment centres (False).
        generator: source of the training offsets.
    """
    positions = segment_positions(num_frames, count, train, generator)
    return ClipIndices(
        positions=positions,
        rgb=list(positions),
        flow=[flow_stack(p, num_flows, flow_length) for p in positions],
    )
