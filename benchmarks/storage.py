"""Prepared-data storage side by side: files, bytes, and training-loader clips/s per worker (issue 26).

One run writes ``--videos`` H.264 videos (``--size``, ``--length`` frames, smooth moving content),
prepares them with ``stfn prepare`` (DIS flow) as rawframes, and stores the same JPEG bytes in each
candidate layout:

- ``rawframes``: MMAction2's folder per video, one file per frame and flow component;
- ``packed``: stfn's ``<key>.stfnpack`` per video (``stfn repack``; :mod:`stfn.data.prepare.packed`);
- ``tar``: WebDataset-style tar shards (``--shards``), read at random through an index of member
  offsets built once per shard (``tarfile``), ``os.pread`` per image;
- ``lmdb``: one LMDB environment, one key per image, one write transaction per video;
- ``hdf5``: one HDF5 file, a group per video with variable-length byte arrays (``h5py``);
- ``video+packed flow``: RGB decoded on the fly from the source video (PyAV seeks,
  :func:`stfn.data.video.decode.read_frames`), flow from the packed files.

"read ms/clip" is the storage's part of a training sample alone: the reads of its sampled JPEGs
(``FrameStore.read``; for the video layout also the RGB seek and decode). The loader rate is
``VideoFrameDataset[i]`` (TSN sampling of T segments, the flow stacks, JPEG decode,
the training crop and flip, normalisation) in this process on one thread: clips per second per loader
worker. "warm": the files in the page cache; "cold": every file of the layout evicted before each
round with ``posix_fadvise(DONTNEED)`` (a local disk; a network file system adds a round trip per file
open, which this does not measure). Rounds are interleaved across layouts; medians.

Usage::

    python benchmarks/storage.py                 # 24 videos x 64 frames at 340x256, T=8, L=5, crop 224
    python benchmarks/storage.py --quick         # a smoke test
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import tarfile
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch

from stfn.data.prepare.packed import FrameStore, RawFrames

INFO = {  # what each layout gives besides speed (BENCHMARKS.md section 11)
    "rawframes": "MMAction2 reads it; a video replaced by a folder rename",
    "packed": "one file per video, replaced by a rename; resumable per video",
    "tar": "append-only shards: a video cannot be redone alone; index built per shard at open",
    "lmdb": "transactions per video; one big file and a lock file; needs lmdb",
    "hdf5": "a kill while writing can corrupt the whole file; forked workers must reopen it; needs h5py",
    "video+packed flow": "no RGB stored; a seek and decode per segment",
}


def write_videos(root: Path, videos: int, length: int, width: int, height: int) -> None:
    """``root/<Class>/v_<Class>_gNN_c01.mp4``: textured backgrounds with a patch moving across."""
    import av

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    for v in range(videos):
        cls = ("ApplyEyeMakeup", "Archery")[v % 2]
        path = root / cls / f"v_{cls}_g{v // 2 + 8:02d}_c01.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        phase = rng.uniform(0, 6.28, 3)
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=Fraction(25, 1))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "20", "preset": "ultrafast"}
            for f in range(length):
                img = np.stack([127 + 90 * np.sin((xx + 3 * f) / (9 + 4 * c) + phase[c]) * np.cos(yy / 17.0)
                                for c in range(3)], axis=-1)
                x0 = (4 * f) % (width - 60)
                img[height // 3:height // 3 + 50, x0:x0 + 60] = (230, 60 + v * 5 % 150, 40)
                frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)


def _names(n: int, m: int) -> list[str]:
    return [f"img_{i:05d}.jpg" for i in range(1, n + 1)] + [f"flow_{c}_{k:05d}.jpg" for k in range(1, m + 1) for c in "xy"]


def _wanted(frames: list[int], fields: list[int]) -> list[str]:
    return [f"img_{i + 1:05d}.jpg" for i in frames] + [f"flow_{c}_{k + 1:05d}.jpg" for k in fields for c in "xy"]


class _OneFileStore(FrameStore):
    """A layout whose videos share files: errors name the layout's folder."""

    def location(self, key: str) -> Path:
        return self.root


class TarStore(_OneFileStore):
    """WebDataset-style shards (``shard-NNNNN.tar``, members ``<key>/<image name>``), read through an
    index of member offsets built at open (a scan of every header: the cost of a tar at start-up)."""

    format = "tar"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.index: dict[str, tuple[Path, int, int]] = {}
        for shard in sorted(root.glob("shard-*.tar")):
            with tarfile.open(shard) as t:
                self.index.update({m.name: (shard, m.offset_data, m.size) for m in t.getmembers()})

    @staticmethod
    def write(raw: Path, counts: dict[str, tuple[int, int]], out: Path, shards: int) -> None:
        out.mkdir(parents=True)
        keys = sorted(counts)
        for s in range(shards):
            with tarfile.open(out / f"shard-{s:05d}.tar", "w") as t:
                for key in keys[s::shards]:
                    for name in _names(*counts[key]):
                        t.add(raw / key / name, arcname=f"{key}/{name}")

    def read(self, key: str, frames, fields) -> tuple[list[bytes], list[bytes]]:
        blobs, fds = [], {}
        try:
            for name in _wanted(list(frames), list(fields)):
                shard, at, size = self.index[f"{key}/{name}"]
                fd = fds.get(shard) or fds.setdefault(shard, os.open(shard, os.O_RDONLY))
                blobs.append(os.pread(fd, size, at))
        finally:
            for fd in fds.values():
                os.close(fd)
        return blobs[:len(frames)], blobs[len(frames):]


class LmdbStore(_OneFileStore):
    """One LMDB environment, key ``<key>/<image name>``."""

    format = "lmdb"

    def __init__(self, root: Path) -> None:
        import lmdb

        super().__init__(root)
        self.env = lmdb.open(str(root), readonly=True, lock=False, readahead=False)

    def close(self) -> None:
        """Unmap the environment (mapped pages stay in the page cache whatever fadvise says)."""
        self.env.close()

    def reopen(self) -> None:
        self.__init__(self.root)

    @staticmethod
    def write(raw: Path, counts: dict[str, tuple[int, int]], out: Path) -> None:
        import lmdb

        size = sum(f.stat().st_size for f in raw.rglob("*.jpg"))
        env = lmdb.open(str(out), map_size=int(size * 1.5) + (64 << 20))
        for key in sorted(counts):
            with env.begin(write=True) as txn:
                for name in _names(*counts[key]):
                    txn.put(f"{key}/{name}".encode(), (raw / key / name).read_bytes())
        env.close()

    def read(self, key: str, frames, fields) -> tuple[list[bytes], list[bytes]]:
        with self.env.begin(buffers=False) as txn:
            blobs = [txn.get(f"{key}/{name}".encode()) for name in _wanted(list(frames), list(fields))]
        return blobs[:len(frames)], blobs[len(frames):]


class Hdf5Store(_OneFileStore):
    """One HDF5 file; per video, ``img`` (N) and ``flow`` (2M, x and y interleaved) variable-length bytes."""

    format = "hdf5"

    def __init__(self, root: Path) -> None:
        import h5py

        super().__init__(root)
        self.file = h5py.File(root / "data.h5", "r")

    def close(self) -> None:
        """Drop HDF5's own chunk cache with the file."""
        self.file.close()

    def reopen(self) -> None:
        self.__init__(self.root)

    @staticmethod
    def write(raw: Path, counts: dict[str, tuple[int, int]], out: Path) -> None:
        import h5py

        out.mkdir(parents=True)
        kind = h5py.vlen_dtype(np.uint8)
        with h5py.File(out / "data.h5", "w") as f:
            for key, (n, m) in sorted(counts.items()):
                names = _names(n, m)
                blobs = [np.frombuffer((raw / key / x).read_bytes(), np.uint8) for x in names]
                g = f.create_group(key)
                g.create_dataset("img", (n,), dtype=kind)[:] = blobs[:n]
                g.create_dataset("flow", (2 * m,), dtype=kind)[:] = blobs[n:]

    def read(self, key: str, frames, fields) -> tuple[list[bytes], list[bytes]]:
        g = self.file[key]
        rgb = [g["img"][i].tobytes() for i in frames]
        xy = [g["flow"][2 * k + c].tobytes() for k in fields for c in (0, 1)]
        return rgb, xy


class VideoRgbDataset:
    """``ds[(i, seed)]`` as the training set gives it, with RGB decoded from the source video at the
    sampled frames (PyAV seeks) and flow from ``flow_set`` (a packed training set)."""

    def __init__(self, flow_set: Any, videos: Path) -> None:
        self.flow_set, self.videos = flow_set, videos
        self.flow_only = copy.copy(flow_set)
        self.flow_only.streams = ["flow"]

    def __len__(self) -> int:
        return len(self.flow_set)

    def read(self, index: int, seed: int) -> tuple[Any, list[bytes]]:
        """The sampled RGB frames, decoded from the video, and the flow stacks' JPEG bytes."""
        from stfn.data.video.decode import read_frames

        rec, (frames, fields) = self.flow_set.records[index], sampled(self.flow_set, index, seed)
        return read_frames(self.videos / f"{rec.key}.mp4", frames), self.flow_set.store.read(rec.key, [], fields)[1]

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        from stfn.data.sampling import sample_clip
        from stfn.data.video.decode import read_frames

        index, seed = item
        rec = self.flow_set.records[index]
        n, m = self.flow_set.counts[rec.key]
        gen = torch.Generator().manual_seed(seed)
        idx = sample_clip(n, m, self.flow_set.frames, self.flow_set.flow_length, True, gen)
        rgb = torch.from_numpy(read_frames(self.videos / f"{rec.key}.mp4", idx.rgb)).permute(0, 3, 1, 2)
        clip = self.flow_only.load_clip(index, torch.Generator().manual_seed(seed))
        return self.flow_set.transform({**clip, "rgb": rgb}, gen)


def sampled(ds: Any, index: int, seed: int) -> tuple[list[int], list[int]]:
    """The distinct frames and flow fields a training sample of video ``index`` reads (TSN sampling)."""
    from stfn.data.sampling import sample_clip

    n, m = ds.counts[ds.records[index].key]
    idx = sample_clip(n, m, ds.frames, ds.flow_length, True, torch.Generator().manual_seed(seed))
    return sorted(set(idx.rgb)), sorted({k for stack in idx.flow for k in stack})


def read_only(ds: Any, index: int, seed: int) -> None:
    """What a sample costs the storage alone: the reads (and, for the video layout, the RGB decode)."""
    if isinstance(ds, VideoRgbDataset):
        ds.read(index, seed)
    else:
        ds.store.read(ds.records[index].key, *sampled(ds, index, seed))


def files_and_bytes(root: Path) -> tuple[int, int, int]:
    """Regular files, apparent bytes and bytes on disk (allocated blocks) under ``root``."""
    files = apparent = disk = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            files, apparent, disk = files + 1, apparent + st.st_size, disk + st.st_blocks * 512
    return files, apparent, disk


def evict(roots: list[Path]) -> None:
    """Drop the files under ``roots`` from the page cache (clean pages; no root rights needed)."""
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)


def build_layouts(tmp: Path, args: Any) -> tuple[dict[str, Any], dict[str, list[Path]], dict[str, float]]:
    """Videos, the rawframes set and every other layout of it: ``(datasets, files per layout, build seconds)``."""
    from stfn.config import DataConfig
    from stfn.data.datasets import build_dataset
    from stfn.data.prepare.convert import repack
    from stfn.data.prepare.manifest import load_manifest
    from stfn.data.prepare.packed import PackedFrames
    from stfn.data.prepare.run import prepare_dataset

    width, height = (int(v) for v in args.size.split("x"))
    with common.section("videos"):
        write_videos(tmp / "videos", args.videos, args.length, width, height)
    t0 = time.perf_counter()
    prepared = prepare_dataset(tmp / "videos", tmp / "rawframes", workers=args.workers, progress=False)
    seconds = {"rawframes": time.perf_counter() - t0}
    print(f"prepare: {prepared.frames} frames in {seconds['rawframes']:.1f} s", file=sys.stderr)
    counts = {k: (v["frames"], v["flows"]) for k, v in load_manifest(tmp / "rawframes").ok().items()}
    splits = tmp / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    lines = [f"{k}.mp4 {1 + k.startswith('Archery')}" for k in sorted(counts)]
    (splits / "trainlist01.txt").write_text("\n".join(lines) + "\n")
    (splits / "testlist01.txt").write_text("\n".join(x.split()[0] for x in lines) + "\n")
    builders = {
        "packed": lambda out: repack(tmp / "rawframes", out, "packed", progress=False),
        "tar": lambda out: TarStore.write(tmp / "rawframes", counts, out, args.shards),
        "lmdb": lambda out: LmdbStore.write(tmp / "rawframes", counts, out),
        "hdf5": lambda out: Hdf5Store.write(tmp / "rawframes", counts, out),
    }
    stores: dict[str, type[FrameStore]] = {"rawframes": RawFrames, "packed": PackedFrames, "tar": TarStore,
                                           "lmdb": LmdbStore, "hdf5": Hdf5Store}
    cfg = DataConfig(dataset="ucf101", root=str(tmp / "rawframes"), splits=str(splits), frames=args.frames,
                     scale_size=args.scale_size, crop_size=args.crop_size)
    base = build_dataset(cfg, "train", ["rgb", "flow"], args.flow_length)
    sets, files = {}, {}
    for name, store in stores.items():
        if name in builders:
            try:
                t0 = time.perf_counter()
                builders[name](tmp / name)
                seconds[name] = time.perf_counter() - t0
            except ImportError as e:
                print(f"{name}: skipped ({e.name} is not installed: pip install {e.name})", file=sys.stderr)
                continue
        sets[name] = copy.copy(base)
        sets[name].store = store(tmp / name)
        files[name] = [tmp / name]
    sets["video+packed flow"] = VideoRgbDataset(sets["packed"], tmp / "videos")
    files["video+packed flow"], seconds["video+packed flow"] = [tmp / "videos", tmp / "packed"], seconds["packed"]
    return sets, files, seconds


def clips_per_s(sets: dict[str, Any], files: dict[str, list[Path]], clips: int, rounds: int, cold: bool,
                reads: bool) -> dict[str, float]:
    """Median clips per second of each set over ``rounds`` interleaved rounds of ``clips`` samples:
    whole training samples, or (``reads``) the storage's part of them only."""
    times: dict[str, list[float]] = {k: [] for k in sets}
    for r in range(rounds + 1):  # the first round warms up (imports, the page cache when warm)
        for name in list(sets) if r % 2 else list(sets)[::-1]:
            ds = sets[name]
            store = getattr(ds, "store", None)
            if cold:
                getattr(store, "close", lambda: None)()
                evict(files[name])
                getattr(store, "reopen", lambda: None)()
            t0 = time.perf_counter()
            for i in range(clips):
                if reads:
                    read_only(ds, i % len(ds), 1000 * r + i)
                else:
                    ds[(i % len(ds), 1000 * r + i)]
            if r:
                times[name].append(time.perf_counter() - t0)
    return {k: clips / statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--length", type=int, default=64, help="frames per video")
    p.add_argument("--size", default="340x256", help="video frame size WxH (TSN's)")
    p.add_argument("--frames", type=int, default=8, help="T segments per clip")
    p.add_argument("--flow-length", type=int, default=5)
    p.add_argument("--scale-size", type=int, default=256)
    p.add_argument("--crop-size", type=int, default=224)
    p.add_argument("--shards", type=int, default=2, help="tar shards")
    p.add_argument("--clips", type=int, default=16, help="clips per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="stfn prepare's processes")
    args = p.parse_args(argv)
    if args.quick:
        args.videos, args.length, args.size, args.clips, args.rounds = 4, 16, "160x128", 2, 1
        args.scale_size, args.crop_size, args.frames, args.flow_length = 128, 112, 4, 2
    torch.set_num_threads(1)
    load = common.loadavg()
    with tempfile.TemporaryDirectory(prefix="stfn-storage-") as tmp:
        sets, files, build = build_layouts(Path(tmp), args)
        rates = {}
        for cold in (False, True):
            for reads in (True, False):
                with common.section(f"{'reads' if reads else 'loader'}, {'cold' if cold else 'warm'}"):
                    rates[cold, reads] = clips_per_s(sets, files, args.clips * (4 if reads else 1), args.rounds,
                                                     cold, reads)
        rows, results = [], {}
        for name in sets:
            n, apparent, disk = (sum(x) for x in zip(*(files_and_bytes(f) for f in files[name]), strict=True))
            r = {f"{'reads' if reads else 'clips'}_per_s_{'cold' if cold else 'warm'}": v[name]
                 for (cold, reads), v in rates.items()}
            results[name] = {"files": n, "bytes": apparent, "bytes_on_disk": disk, "build_seconds": build[name],
                             **r, "notes": INFO[name]}
            rows.append([name, n, f"{apparent / 2**20:.1f}", f"{disk / 2**20:.1f}", f"{build[name]:.1f}",
                         f"{1e3 / r['reads_per_s_warm']:.2f}", f"{1e3 / r['reads_per_s_cold']:.2f}",
                         f"{r['clips_per_s_warm']:.1f}", f"{r['clips_per_s_cold']:.1f}",
                         f"{r['clips_per_s_cold'] / rates[True, False]['rawframes']:.2f}", INFO[name]])
    print(f"\n{args.videos} videos x {args.length} frames at {args.size}; T={args.frames} L={args.flow_length} "
          f"crop {args.crop_size}; 1 thread, one loader worker; medians of {args.rounds} interleaved rounds of "
          f"{args.clips} clips\n")
    print(common.md_table(["layout", "files", "MB", "MB on disk", "build s", "read ms/clip warm",
                           "read ms/clip cold", "clips/s warm", "clips/s cold", "cold vs rawframes", "notes"], rows))
    common.write_results("storage", {"settings": vars(args) | {"out": str(args.out)}, "results": results},
                         args.out, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
