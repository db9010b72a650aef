"""Video decoding: metadata, full sequential decode, and frame-accurate sparse decode.

The one module of stfn that talks to a decoder library (with :mod:`stfn.data.video.seek`, its
frame-accurate seeking in a PyAV stream). Two backends:

* ``pyav`` (default, self-contained wheels): always available.
* ``torchcodec`` (optional extra, needs FFmpeg shared libraries): used by ``backend="auto"`` for
  :func:`read_video` and :func:`read_frames` when it imports and works. AVI files always go to PyAV
  (torchcodec 0.17 returns frame ``i-1`` for index ``i`` and cannot reach the last frame of the
  packed-bitstream XviD AVIs that UCF101 and HMDB51 use), and any other file torchcodec fails on falls
  back to PyAV, so both backends give the same frames and the same errors.

Rotation: a video whose display matrix rotates it (a phone filming upright, storing sideways) is
decoded upright, as players show it: :func:`probe` gives the displayed size and the ``rotation``, and
every frame is turned by the nearest quarter turn (mirroring display matrices are not applied).

Frame numbering: index ``i`` (0-based) is the ``i``-th frame, in presentation order, of a full
sequential decode; this is what OpenCV, decord and MMAction2 count. Frames are RGB ``uint8`` arrays of
shape ``(H, W, 3)``.

Errors: a missing, empty, non-video, corrupt or truncated file raises :class:`VideoError` (an
:class:`~stfn.errors.StfnError`) whose message names the file. Any decoder error counts as corrupt.
A file is called truncated when it decodes to clearly fewer frames than its header announces.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stfn.data.video.seek import frame_rgb, quarter_turns, scan_packets, seek_decode, sequential_decode
from stfn.errors import StfnError

__all__ = [
    "BACKENDS",
    "VideoError",
    "VideoInfo",
    "available_backends",
    "count_packets",
    "iter_frames",
    "probe",
    "read_frames",
    "read_video",
    "resize_shape",
]

BACKENDS = ("pyav", "torchcodec")


class VideoError(StfnError):
    """A video file cannot be opened or decoded; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata of one video (from the header: no frame is decoded)."""

    path: str
    frames: int  # header frame count, or round(duration * fps) when the header has none
    fps: float
    width: int
    height: int
    duration: float  # seconds
    codec: str
    container: str  # FFmpeg demuxer name: "avi", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", ...
    frames_exact: bool  # True when ``frames`` comes from the header, False when it is estimated
    rotation: int = 0  # counter-clockwise degrees of the display matrix (a phone's sideways video);
    # width and height are then the displayed size, which every decoded frame has


@functools.cache
def _torchcodec_ok() -> bool:
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception:  # not installed, or FFmpeg shared libraries missing
        return False
    return True


def available_backends() -> list[str]:
    """Backends that import on this machine, PyAV first."""
    return ["pyav"] + (["torchcodec"] if _torchcodec_ok() else [])


def _resolve_backend(backend: str | None, path: str | os.PathLike = "") -> str:
    name = backend or os.environ.get("STFN_VIDEO_BACKEND", "auto")
    if name == "auto":
        # torchcodec mis-indexes packed-bitstream AVIs (UCF101, HMDB51): skip trying it there.
        avi = str(path).lower().endswith(".avi")
        return "torchcodec" if _torchcodec_ok() and not avi else "pyav"
    if name not in BACKENDS:
        raise StfnError(f"unknown video backend '{name}' (choose auto, {', '.join(BACKENDS)})")
    if name == "torchcodec" and not _torchcodec_ok():
        raise StfnError(
            "video backend 'torchcodec' is not usable here: install it with `pip install torchcodec` "
            "and the FFmpeg shared libraries (libavcodec, libavformat, libavutil, ...)"
        )
    return name


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        if p.is_symlink():  # is_file() follows the link: a dangling one, or a loop
            try:
                p.resolve(strict=True)
            except RuntimeError:  # Python < 3.13 reports a loop so
                raise VideoError(f"video file '{p}' is a symbolic link loop") from None
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise VideoError(f"video file '{p}' is a symbolic link loop") from None
                raise VideoError(f"video file '{p}' is a symbolic link to '{os.readlink(p)}', which does not "
                                 "exist") from None
        raise VideoError(f"video file '{p}' does not exist")
    if p.stat().st_size == 0:
        raise VideoError(f"video file '{p}' is empty")
    return p


def _fail(p: Path, e: BaseException) -> VideoError:
    reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return VideoError(f"cannot decode video '{p}' (corrupt data?): {reason[:1].lower() + reason[1:]}")


def _open(p: Path, threads: int = 0):
    """Open ``p`` with PyAV and return ``(container, video stream)``."""
    import av  # decoder libraries load on first use: stfn prepare workers and the CLI import this module

    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"cannot open video '{p}': not a readable video file ({e.__class__.__name__})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"'{p}' holds no video stream")
    stream = container.streams.video[0]
    if threads > 0:
        stream.thread_type = "SLICE" if threads == 1 else "AUTO"
        stream.codec_context.thread_count = threads
    else:
        stream.thread_type = "AUTO"
    return container, stream


def _header(p: Path, container, stream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    exact = stream.frames > 0
    frames = int(stream.frames) if exact else int(round(duration * fps))
    return VideoInfo(
        path=str(p),
        frames=frames,
        fps=fps,
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        duration=duration,
        codec=stream.codec_context.name,
        container=container.format.name,
        frames_exact=exact,
    )


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read the metadata of ``path`` from its header (fast: nothing is decoded).

    ``frames`` may be an estimate (see ``frames_exact``); the exact count is ``len(read_video(path))``
    or what ``stfn prepare`` records in its manifest.
    """
    p = _check_path(path)
    container, stream = _open(p)
    try:
        info = _header(p, container, stream)
        if info.container != "avi":  # AVI has no display matrix; elsewhere it rides on the frames
            info = _with_rotation(info, container, stream)
    finally:
        container.close()
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"video '{p}' has no valid frame size in its header")
    return info


def _with_rotation(info: VideoInfo, container, stream) -> VideoInfo:
    """``info`` with the display rotation of the first frame (decoding it) and the displayed size."""
    import av  # see _open

    try:
        rotation = int(next(iter(container.decode(stream))).rotation or 0)
    except (av.FFmpegError, OSError, ValueError, StopIteration):
        return info  # the decode that follows reports a broken file
    if quarter_turns(rotation) % 2:
        return dataclasses.replace(info, rotation=rotation, width=info.height, height=info.width)
    return dataclasses.replace(info, rotation=rotation)


def count_packets(path: str | os.PathLike) -> int:
    """Frames the container holds, counted by demuxing (nothing is decoded): what the header's count
    should say. A header can be wrong (an AVI whose header says 5 frames holds 100); a full decode
    (``len(read_video(path))``, what ``stfn prepare`` records) can still find a frame or two fewer."""
    import av  # see _open

    p = _check_path(path)
    container, stream = _open(p)
    try:
        return scan_packets(container, stream).count
    except (av.FFmpegError, OSError, ValueError) as e:
        raise _fail(p, e) from None
    finally:
        container.close()


def _check_length(info: VideoInfo, decoded: int) -> None:
    """Raise if a file decodes to clearly fewer frames than its header announces (truncation)."""
    if decoded == 0:
        raise VideoError(f"video '{info.path}' holds no decodable frame")
    if info.frames <= 0:
        return
    slack = 2 + (0.01 if info.frames_exact else 0.05) * info.frames
    if decoded < info.frames - slack:
        raise VideoError(
            f"video '{info.path}' is truncated: its header announces {info.frames} frames "
            f"but only {decoded} decode"
        )


def resize_shape(
    width: int, height: int, short_side: int | None = None, size: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Output ``(width, height)`` for a resize to ``size=(W, H)`` or to a short side (aspect kept)."""
    if size is not None and short_side is not None:
        raise StfnError("give either a short side or a size (WxH) to resize to, not both")
    if size is not None:
        w, h = int(size[0]), int(size[1])
    elif short_side is not None:
        scale = short_side / min(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
    else:
        return width, height
    if w <= 0 or h <= 0:
        raise StfnError(f"resize target {w}x{h} must be positive")
    return w, h


def _resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (frame.shape[1], frame.shape[0]) == tuple(size):
        return frame
    import cv2  # see _open

    shrink = size[0] * size[1] < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def iter_frames(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] | None = None,
    threads: int = 0,
    strict: bool = True,
) -> Iterator[np.ndarray]:
    """Decode ``path`` sequentially with PyAV, yielding RGB ``(H, W, 3)`` uint8 frames one by one.

    Memory stays constant whatever the video length. ``size=(W, H)`` resizes every frame (OpenCV,
    area for shrinking, bilinear for enlarging). ``threads=0`` lets FFmpeg pick; ``1`` for worker
    processes. With ``strict`` a truncated file raises :class:`VideoError` once iteration reaches
    the end (after the frames that did decode were yielded).
    """
    import av  # see _open

    p = _check_path(path)
    container, stream = _open(p, threads)
    try:
        info = _header(p, container, stream)
        n = 0
        try:
            for frame in container.decode(stream):
                image = frame_rgb(frame)
                n += 1
                yield _resize(image, size)
        except (av.FFmpegError, OSError, ValueError, MemoryError) as e:
            raise _fail(p, e) from None
        if strict:
            _check_length(info, n)
    finally:
        container.close()


def read_video(
    path: str | os.PathLike, *, size: tuple[int, int] | None = None, backend: str | None = None
) -> np.ndarray:
    """Decode every frame of ``path``: RGB uint8 array ``(N, H, W, 3)``.

    ``backend``: ``None``/``"auto"`` (torchcodec when usable, except for AVI files; else PyAV; env
    ``STFN_VIDEO_BACKEND`` overrides), ``"pyav"`` or ``"torchcodec"``.
    """
    if _resolve_backend(backend, path) == "torchcodec":
        frames = _torchcodec_read(path, None)
        if frames is not None:
            return np.stack([_resize(f, size) for f in frames]) if size else frames
    return np.stack(list(iter_frames(path, size=size)))


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    *,
    size: tuple[int, int] | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """Decode only the frames at ``indices`` (0-based, any order, repeats allowed): ``(K, H, W, 3)``.

    Equal to ``read_video(path)[indices]``. Seeks to the key frame before each target when the
    container has reliable timestamps (MP4, MKV, WebM, ...), so a sparse read does not decode the whole
    file; otherwise (AVI, whose timestamps are frame counters) decodes up to the last index without
    converting the frames it skips. An index past the end raises :class:`VideoError`. Only the
    frames needed are decoded, so damage elsewhere in the file goes unnoticed here (``read_video``
    and ``stfn prepare`` decode everything and reject such files).
    """
    idx = [int(i) for i in indices]
    if not idx:
        raise StfnError("read_frames needs at least one frame index")
    if min(idx) < 0:
        raise VideoError(f"negative frame index {min(idx)} for video '{path}'")
    frames = None
    if _resolve_backend(backend, path) == "torchcodec":
        frames = _torchcodec_read(path, idx)
    if frames is None:
        frames = _pyav_read_frames(_check_path(path), idx)
    if size:
        frames = np.stack([_resize(f, size) for f in frames])
    return frames


# --- PyAV sparse decode (stfn.data.video.seek) -----------------------------------------------------


def _pyav_read_frames(p: Path, indices: list[int]) -> np.ndarray:
    import av  # see _open

    container, stream = _open(p)
    try:
        try:
            info = _header(p, container, stream)
            scan = scan_packets(container, stream)
            _check_length(info, scan.count)
            if max(indices) >= scan.count:
                raise VideoError(
                    f"frame index {max(indices)} is out of range for video '{p}' ({scan.count} frames)"
                )
            got = seek_decode(container, stream, scan, indices) if scan.pts else None
            if got is None:
                container.seek(0)
                got = sequential_decode(container, stream, indices)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise _fail(p, e) from None
    finally:
        container.close()
    missing = sorted(set(indices) - got.keys())
    if missing:  # fewer decodable frames than packets (e.g. packed B-frames)
        raise VideoError(f"frame index {missing[0]} is out of range for video '{p}'")
    return np.stack([got[i] for i in indices])


# --- torchcodec --------------------------------------------------------------------------------


def _torchcodec_read(path: str | os.PathLike, indices: list[int] | None) -> np.ndarray | None:
    """All frames (``indices=None``) or the given ones with torchcodec; ``None`` means: use PyAV.

    Errors are left to PyAV, so that both backends fail on the same files with the same message.
    """
    from torchcodec.decoders import VideoDecoder  # optional extra: see _torchcodec_ok

    info = probe(path)
    if info.container == "avi" or quarter_turns(info.rotation):
        return None  # torchcodec returns frame i-1 for index i on packed-bitstream AVIs (0.17); PyAV turns
        # rotated videos upright
    try:
        decoder = VideoDecoder(info.path, dimension_order="NHWC", seek_mode="exact")
        n = len(decoder)
        if n == 0 or (indices is not None and max(indices) >= n):
            return None
        _check_length(info, n)
        if indices is None:
            return decoder.get_frames_in_range(0, n).data.numpy()
        return decoder.get_frames_at(indices).data.numpy()
    except Exception:  # RuntimeError/ValueError on files torchcodec cannot handle, VideoError
        return None
