"""Where a prepared video's JPEGs live: one file per image (``rawframes``) or one file per video (``packed``).

``rawframes`` is MMAction2's layout: ``<root>/<key>/img_00001.jpg ...`` and ``flow_x_00001.jpg``,
``flow_y_00001.jpg`` ..., about three files per frame (Kinetics-400: ~180 million). ``packed`` holds the
same JPEG bytes in one file per video, ``<root>/<key>.stfnpack``::

    header  32 bytes   b"STFNPACK", version (u32), frames N (u32), flow fields M (u32), 0 (u32),
                       index offset (u64)
    data               img_1 ... img_N, then flow_x_1, flow_y_1, flow_x_2, flow_y_2, ... (x and y of a
                       field side by side, so an L-field flow stack is one contiguous read)
    index              N + 2M + 1 cumulative offsets (u64, little-endian): blob i is [off[i], off[i+1])
    trailer 8 bytes    b"STFNEND1"

A reader opens the file once, reads the header, then the index with the trailer, and reads each run of consecutive
sampled blobs in one ``os.pread``: a clip of T frames and T flow stacks is one open and about 2T + 2
reads, whatever the video's length. A file whose size, trailer or index does not add up (a copy cut
short, a disk error) is refused in one sentence naming it. Files are written whole, then renamed into
place (:func:`write_pack`, :func:`pack_folder`), so a kill never leaves a half-written pack under its final name.

:func:`open_store` gives the reader of a prepared folder's format (the manifest's ``format``; folders
without one are ``rawframes``); both stores answer the same calls with the same bytes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from stfn.errors import StfnError
from stfn.fileio import atomic_write_with

__all__ = [
    "FORMATS",
    "PACK_SUFFIX",
    "FrameStore",
    "PackedFrames",
    "RawFrames",
    "open_store",
    "pack_folder",
    "read_pack_counts",
    "unpack",
    "write_pack",
]

FORMATS = ("rawframes", "packed")
PACK_SUFFIX = ".stfnpack"
_MAGIC, _TRAILER, _VERSION = b"STFNPACK", b"STFNEND1", 1
_HEADER = struct.Struct("<8sIIIIQ")  # magic, version, frames, flows, reserved, index offset


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted distinct ``indices`` as ``(first, count)`` runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(indices)):
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def write_pack(path: str | os.PathLike, frames: Iterable[bytes], flows: Iterable[tuple[bytes, bytes]]) -> None:
    """Write the JPEG ``frames`` and the flow fields ``flows`` (``(x, y)`` pairs) as a pack at ``path``,
    streamed (one image in memory at a time) into a temporary file beside it that is renamed into place
    when whole (:mod:`stfn.fileio`: a reader sees the old file or the new one)."""
    path = Path(path)

    def write(fd: int, tmp: str) -> None:
        offsets = [_HEADER.size]
        n = m = 0
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(_HEADER.size))
            for blob in frames:
                offsets.append(offsets[-1] + f.write(blob))
                n += 1
            for x, y in flows:
                offsets += [offsets[-1] + f.write(x), offsets[-1] + len(x) + f.write(y)]
                m += 1
            f.write(np.asarray(offsets, dtype="<u8").tobytes() + _TRAILER)
            f.seek(0)
            f.write(_HEADER.pack(_MAGIC, _VERSION, n, m, 0, offsets[-1]))
            f.flush()
            os.fsync(f.fileno())

    atomic_write_with(path, write)


def pack_folder(folder: str | os.PathLike, frames: int, flows: int, path: str | os.PathLike) -> None:
    """Pack the rawframes ``folder`` (``frames`` img files, ``flows`` flow fields) into ``path``."""
    folder = Path(folder)

    def read(name: str) -> bytes:
        try:
            return (folder / name).read_bytes()
        except OSError:
            raise StfnError(f"prepared image '{folder / name}' cannot be read; "
                            "run `stfn prepare` again for this video") from None

    write_pack(path, (read(f"img_{i:05d}.jpg") for i in range(1, frames + 1)),
               ((read(f"flow_x_{k:05d}.jpg"), read(f"flow_y_{k:05d}.jpg")) for k in range(1, flows + 1)))


def unpack(path: str | os.PathLike, folder: str | os.PathLike) -> tuple[int, int]:
    """Write the images of the pack ``path`` as rawframes files into ``folder``: ``(frames, flows)``."""
    store, path, folder = PackedFrames(Path(path).parent), Path(path), Path(folder)
    key = path.name[: -len(PACK_SUFFIX)]
    n, m = store.counts(key)
    folder.mkdir(parents=True, exist_ok=True)
    for first in range(0, max(n, m), 256):  # a bounded number of images in memory at once
        frames, fields = range(first, min(first + 256, n)), range(first, min(first + 256, m))
        rgb, xy = store.read(key, list(frames), list(fields))
        for i, blob in zip(frames, rgb, strict=True):
            (folder / f"img_{i + 1:05d}.jpg").write_bytes(blob)
        for j, k in enumerate(fields):
            (folder / f"flow_x_{k + 1:05d}.jpg").write_bytes(xy[2 * j])
            (folder / f"flow_y_{k + 1:05d}.jpg").write_bytes(xy[2 * j + 1])
    return n, m


def _read_header(fd: int, path: Path, size: int) -> tuple[int, int, np.ndarray]:
    """``(frames, flows, offsets)`` of the open pack ``fd``; a file that does not add up is one sentence."""
    head = os.pread(fd, _HEADER.size, 0)
    if len(head) < _HEADER.size or head[:8] != _MAGIC:
        raise StfnError(f"'{path}' is not an stfn packed video (no STFNPACK header); prepare it again")
    _, version, n, m, _, index_at = _HEADER.unpack(head)
    if version != _VERSION:
        raise StfnError(f"packed video '{path}' has format version {version}; this stfn reads version {_VERSION}")
    count = n + 2 * m + 1
    expected = index_at + 8 * count + len(_TRAILER)
    tail = os.pread(fd, 8 * count + len(_TRAILER), index_at) if size == expected else b""
    if not tail.endswith(_TRAILER):
        raise StfnError(f"packed video '{path}' is truncated or damaged ({size} bytes, its header says {expected}); "
                        "run `stfn prepare` again for this video")
    offsets = np.frombuffer(tail, dtype="<u8", count=count)
    if offsets[0] != _HEADER.size or offsets[-1] != index_at or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise StfnError(f"packed video '{path}' has a damaged index (offsets outside its data); "
                        "run `stfn prepare` again for this video")
    return n, m, offsets


def read_pack_counts(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(frames, flows)`` of a whole, readable pack; None when it is missing, cut short or damaged."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        n, m, _ = _read_header(fd, Path(path), os.fstat(fd).st_size)
        return n, m
    except (StfnError, OSError):
        return None
    finally:
        os.close(fd)


class FrameStore:
    """The JPEG bytes of a prepared folder's videos, by video key and 0-based index."""

    format = ""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def read(self, key: str, frames: Sequence[int], fields: Sequence[int]) -> tuple[list[bytes], list[bytes]]:
        """JPEG bytes of ``frames`` (sorted, distinct 0-based RGB frame indices) and of ``fields`` (sorted,
        distinct flow field indices) as ``(rgb, xy)``; ``xy`` is ``[x_k, y_k, x_k', y_k', ...]``."""
        raise NotImplementedError

    def complete(self, key: str, frames: int, flows: int) -> bool:
        """Whether the video's files hold exactly ``frames`` RGB frames and ``flows`` flow fields."""
        raise NotImplementedError

    def location(self, key: str) -> Path:
        """The folder (rawframes) or file (packed) of a video."""
        raise NotImplementedError


class RawFrames(FrameStore):
    """MMAction2 rawframes: ``<root>/<key>/img_{i+1:05d}.jpg``, ``flow_{x|y}_{k+1:05d}.jpg``."""

    format = "rawframes"

    def location(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str, frames: Sequence[int], fields: Sequence[int]) -> tuple[list[bytes], list[bytes]]:
        folder = self.root / key
        names = [f"img_{i + 1:05d}.jpg" for i in frames] + [f"flow_{c}_{k + 1:05d}.jpg" for k in fields for c in "xy"]
        blobs = []
        for name in names:
            try:
                blobs.append((folder / name).read_bytes())
            except OSError:
                raise StfnError(f"prepared image '{folder / name}' cannot be read; "
                                "run `stfn prepare` again for this video") from None
        return blobs[:len(frames)], blobs[len(frames):]

    def complete(self, key: str, frames: int, flows: int) -> bool:
        """Cheap: the last recorded file of img, flow_x and flow_y exists and the next one does not."""
        folder = self.root / key
        if frames < 1 or not (folder / f"img_{frames:05d}.jpg").is_file() or (folder / f"img_{frames + 1:05d}.jpg").exists():
            return False
        for c in ("x", "y"):
            if flows and not (folder / f"flow_{c}_{flows:05d}.jpg").is_file():
                return False
            if (folder / f"flow_{c}_{flows + 1:05d}.jpg").exists():
                return False
        return True


class PackedFrames(FrameStore):
    """One ``<root>/<key>.stfnpack`` per video (module docstring)."""

    format = "packed"

    def location(self, key: str) -> Path:
        return self.root / f"{key}{PACK_SUFFIX}"

    def _open(self, key: str) -> tuple[int, Path]:
        path = self.location(key)
        try:
            return os.open(path, os.O_RDONLY), path
        except OSError as e:
            raise StfnError(f"packed video '{path}' cannot be read ({e.strerror}); "
                            "run `stfn prepare` again for this video") from None

    def counts(self, key: str) -> tuple[int, int]:
        """``(frames, flows)`` of the video's pack; a missing or damaged pack is one sentence naming it."""
        fd, path = self._open(key)
        try:
            return _read_header(fd, path, os.fstat(fd).st_size)[:2]
        finally:
            os.close(fd)

    def read(self, key: str, frames: Sequence[int], fields: Sequence[int]) -> tuple[list[bytes], list[bytes]]:
        fd, path = self._open(key)
        try:
            n, m, offsets = _read_header(fd, path, os.fstat(fd).st_size)
            if frames and (frames[0] < 0 or frames[-1] >= n) or fields and (fields[0] < 0 or fields[-1] >= m):
                raise StfnError(f"packed video '{path}' holds {n} frames and {m} flow fields, fewer than the "
                                "manifest says; run `stfn prepare` again for this video")
            rgb = self._blobs(fd, offsets, list(frames))
            xy = self._blobs(fd, offsets, [n + 2 * k + c for k in fields for c in (0, 1)])
        finally:
            os.close(fd)
        return rgb, xy

    @staticmethod
    def _blobs(fd: int, offsets: np.ndarray, blobs: list[int]) -> list[bytes]:
        """The bytes of blobs (sorted indices into the index), each run of consecutive blobs in one read."""
        out = []
        for first, count in _runs(blobs):
            start, end = int(offsets[first]), int(offsets[first + count])
            data = os.pread(fd, end - start, start)
            out += [data[int(offsets[i]) - start:int(offsets[i + 1]) - start] for i in range(first, first + count)]
        return out

    def complete(self, key: str, frames: int, flows: int) -> bool:
        return frames >= 1 and read_pack_counts(self.location(key)) == (frames, flows)


def open_store(root: str | os.PathLike, fmt: str = "rawframes") -> FrameStore:
    """The reader of a prepared folder stored as ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "rawframes":
        return RawFrames(root)
    if fmt == "packed":
        return PackedFrames(root)
    raise StfnError(f"unknown prepared format '{fmt}' (choose from {', '.join(FORMATS)})")
