"""Frame-accurate sparse decoding of a PyAV video stream, for :func:`stfn.data.video.decode.read_frames`.

:func:`scan_packets` demuxes without decoding: the frame count and, where they can be trusted (not
AVI, whose timestamps are packet counters; unique, complete), the presentation timestamps and key
frames. :func:`seek_decode` then seeks to the key frame before each target and decodes up to it by
timestamp; :func:`sequential_decode` decodes from the start and converts only the wanted frames.
Frames are RGB ``(H, W, 3)`` uint8 arrays (turned upright by :func:`frame_rgb` when the stream's
display matrix rotates them), keyed by their 0-based index in presentation order.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

__all__ = ["PacketScan", "frame_rgb", "quarter_turns", "scan_packets", "seek_decode", "sequential_decode"]


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0..3) of a display-matrix rotation in degrees (PyAV's
    ``VideoFrame.rotation``: the angle by which the display rotates the frame counter-clockwise),
    rounded to the nearest quarter (phones write 0, 90, 180 or -90)."""
    return round(float(rotation or 0) / 90) % 4


def frame_rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as RGB ``(H, W, 3)`` uint8, turned as its display matrix says (a phone video
    filmed upright but stored sideways comes out upright, as players show it)."""
    image = frame.to_ndarray(format="rgb24")
    k = quarter_turns(frame.rotation)
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


@dataclass
class PacketScan:
    """What :func:`scan_packets` found in a stream."""

    count: int  # frames in the container (non-empty packets)
    pts: list[int] | None  # sorted presentation timestamps, None when they cannot be trusted
    keys: list[int]  # key-frame timestamps, sorted


def scan_packets(container, stream) -> PacketScan:
    """Demux without decoding: frame count and, where reliable, the timestamps needed to seek."""
    pts: list[int] = []
    keys: list[int] = []
    count, reliable = 0, container.format.name != "avi"  # AVI timestamps are packet counters
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # flush packet at the end
        count += 1
        if packet.pts is None or getattr(packet, "is_discard", False):
            reliable = False
        if reliable:
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
    if reliable and (len(set(pts)) != len(pts) or (stream.frames > 0 and stream.frames != count)):
        reliable = False
    return PacketScan(count, sorted(pts) if reliable and len(keys) > 1 else None, sorted(keys))


def sequential_decode(container, stream, indices: list[int]) -> dict[int, np.ndarray]:
    """Decode from the start up to the last index; convert only the wanted frames."""
    wanted, last, got = set(indices), max(indices), {}
    for i, frame in enumerate(container.decode(stream)):
        if i in wanted:
            got[i] = frame_rgb(frame)
        if i >= last:
            break
    return got


def seek_decode(container, stream, scan: PacketScan, indices: list[int]) -> dict[int, np.ndarray] | None:
    """Frame-accurate decode by timestamp; ``None`` if the stream turns out not to be seekable."""
    assert scan.pts is not None
    got: dict[int, np.ndarray] = {}
    frames = None  # live decode iterator
    cur = None  # pts of the last decoded frame
    for target in sorted(set(indices)):
        tpts = scan.pts[target]
        key = scan.keys[max(0, bisect.bisect_right(scan.keys, tpts) - 1)]
        if frames is None or cur is None or cur >= tpts or key > cur:
            container.seek(key, stream=stream, backward=True, any_frame=False)
            frames, cur = container.decode(stream), None
        for frame in frames:
            if frame.pts is None or (cur is not None and frame.pts <= cur):
                return None  # missing or non-monotonic timestamps: fall back to sequential
            cur = frame.pts
            if cur == tpts:
                got[target] = frame_rgb(frame)
                break
            if cur > tpts:
                return None
        else:
            return None
    return got
