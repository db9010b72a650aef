"""Packed storage (`stfn prepare --format packed`, `stfn repack`): the same JPEG bytes as rawframes in one
file per video, read back by index with few reads, damaged files refused in one sentence, resumable."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset_helpers import tiny_run_config, write_tiny_prepared, write_tiny_splits
from stfn.data.datasets import build_dataset
from stfn.data.prepare.convert import repack
from stfn.data.prepare.manifest import load_manifest
from stfn.data.prepare.packed import PackedFrames, RawFrames, open_store, read_pack_counts, unpack, write_pack
from stfn.data.prepare.run import prepare_dataset
from stfn.data.prepare.state import STATE_DIR
from stfn.errors import StfnError

pytestmark = pytest.mark.timeout(300)

FRAMES = [b"frame-%d" % i * (i + 1) for i in range(7)]
FLOWS = [(b"x%d" % k * (k + 2), b"y%d" % k * (3 - k % 3)) for k in range(6)]


@pytest.fixture
def pack(tmp_path: Path) -> PackedFrames:
    write_pack(tmp_path / "packs" / "A" / "v.stfnpack", FRAMES, FLOWS)
    return PackedFrames(tmp_path / "packs")


def test_a_pack_gives_back_the_images_by_index_in_one_read_per_run(pack: PackedFrames, monkeypatch) -> None:
    reads = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: reads.append((n, at)) or real(fd, n, at))
    rgb, xy = pack.read("A/v", [0, 2, 3, 4], [1, 2, 3])
    assert rgb == [FRAMES[i] for i in (0, 2, 3, 4)]
    assert xy == [b for k in (1, 2, 3) for b in FLOWS[k]]  # x_k, y_k, x_k', y_k', ...
    assert len(reads) == 2 + 3  # header, index; frames {0}, {2, 3, 4}; the flow stack 1..3 in one read
    assert pack.counts("A/v") == (7, 6) and pack.complete("A/v", 7, 6) and not pack.complete("A/v", 7, 5)
    assert pack.read("A/v", [], []) == ([], [])


def test_unpack_writes_rawframes_that_read_the_same(pack: PackedFrames, tmp_path: Path) -> None:
    assert unpack(pack.location("A/v"), tmp_path / "raw" / "A" / "v") == (7, 6)
    raw = RawFrames(tmp_path / "raw")
    assert raw.complete("A/v", 7, 6) and not raw.complete("A/v", 6, 6)
    assert raw.read("A/v", [1, 6], [0, 5]) == pack.read("A/v", [1, 6], [0, 5])
    assert sorted(p.name for p in (tmp_path / "raw/A/v").iterdir())[:2] == ["flow_x_00001.jpg", "flow_x_00002.jpg"]


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) - 11]
    elif how == "index past the end":
        index_at = struct.unpack_from("<Q", data, 24)[0]
        struct.pack_into("<Q", data, index_at + 8 * 3, len(data) + 1000)  # offset of blob 3 beyond the file
    elif how == "not a pack":
        data = bytearray(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    elif how == "other version":
        struct.pack_into("<I", data, 8, 9)
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("how", "says"), [
    ("truncated", "is truncated or damaged"),
    ("index past the end", "has a damaged index"),
    ("not a pack", "is not an stfn packed video"),
    ("other version", "has format version 9"),
    ("empty", "is not an stfn packed video"),
])
def test_a_damaged_pack_is_one_sentence_naming_it(pack: PackedFrames, how: str, says: str) -> None:
    path = pack.location("A/v")
    _damage(path, how)
    with pytest.raises(StfnError, match=says) as e:
        pack.read("A/v", [0], [0])
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert read_pack_counts(path) is None and not pack.complete("A/v", 7, 6)


def test_a_missing_pack_and_indices_beyond_it_are_one_sentence(pack: PackedFrames) -> None:
    with pytest.raises(StfnError, match=r"B/w.stfnpack' cannot be read"):
        pack.read("B/w", [0], [])
    with pytest.raises(StfnError, match="holds 7 frames and 6 flow fields, fewer than the manifest says"):
        pack.read("A/v", [7], [])
    with pytest.raises(StfnError, match="unknown prepared format 'lmdb'"):
        open_store(".", "lmdb")


@pytest.fixture
def videos(video_factory, tmp_path: Path) -> Path:
    video_factory("A/a1.mp4", n=12)
    video_factory("A/a2.mp4", n=9, seed=1)
    video_factory("B/b 1.avi", n=10, codec="mpeg4", seed=2)  # a space in the name
    (tmp_path / "videos" / "B" / "bad.mp4").write_bytes(b"\x00not a video" * 50)
    return tmp_path / "videos"


def test_prepare_packed_holds_the_bytes_rawframes_holds_in_one_file_per_video(videos: Path, tmp_path: Path) -> None:
    raw = prepare_dataset(videos, tmp_path / "raw", workers=0, progress=False)
    packed = prepare_dataset(videos, tmp_path / "packed", workers=0, progress=False, storage="packed")
    assert (packed.ok, packed.failed, packed.frames) == (raw.ok, raw.failed, raw.frames) == (3, 1, 31)
    m = load_manifest(tmp_path / "packed")
    assert m.format == "packed" and load_manifest(tmp_path / "raw").format == "rawframes"
    assert {k: (v["frames"], v["flows"]) for k, v in m.ok().items()} == {"A/a1": (12, 11), "A/a2": (9, 8),
                                                                          "B/b 1": (10, 9)}
    files = sorted(p.relative_to(tmp_path / "packed").as_posix() for p in (tmp_path / "packed").rglob("*")
                   if p.is_file() and STATE_DIR not in p.parts)
    assert files == ["A/a1.stfnpack", "A/a2.stfnpack", "B/b 1.stfnpack", "manifest.json", "rawframes.txt",
                     "rawframes_flow.txt"]
    assert not list((tmp_path / "packed" / STATE_DIR).glob("tmp*/*"))  # no images left behind
    a, b = RawFrames(tmp_path / "raw"), PackedFrames(tmp_path / "packed")
    for key, rec in m.ok().items():
        everything = list(range(rec["frames"])), list(range(rec["flows"]))
        assert a.read(key, *everything) == b.read(key, *everything), key


def test_prepare_packed_resumes_and_redoes_a_damaged_or_missing_pack(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "packed"
    prepare_dataset(videos, out, workers=0, progress=False, storage="packed")
    _damage(out / "A/a1.stfnpack", "truncated")
    (out / "A/a2.stfnpack").unlink()
    s = prepare_dataset(videos, out, workers=0, progress=False, storage="packed")
    assert (s.done_before, s.processed, s.ok) == (2, 2, 3)  # B/b 1 and the failed bad.mp4 kept
    assert PackedFrames(out).complete("A/a1", 12, 11) and PackedFrames(out).complete("A/a2", 9, 8)
    with pytest.raises(StfnError, match="other settings"):
        prepare_dataset(videos, out, workers=0, progress=False)  # rawframes into a packed folder


def test_training_reads_the_same_clips_from_packed_and_rawframes(tmp_path: Path) -> None:
    write_tiny_prepared(tmp_path / "raw")
    splits = write_tiny_splits(tmp_path / "splits")
    summary = repack(tmp_path / "raw", tmp_path / "packed", "packed", workers=2, progress=False)
    assert (summary.videos, summary.converted, summary.files_before, summary.files_after) == (12, 12, 156, 12)
    sets = []
    for root in ("raw", "packed"):
        cfg = tiny_run_config(tmp_path / root, splits)
        sets.append(build_dataset(cfg.data, "train", ["rgb", "flow"], flow_length=2))
    assert sets[1].store.format == "packed"
    for i in range(len(sets[0])):
        a, b = (ds.load_clip(i, torch.Generator().manual_seed(i)) for ds in sets)
        assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["flow"], b["flow"])


def test_repack_both_ways_is_byte_exact_resumable_and_keeps_prepare_resumable(videos: Path, tmp_path: Path) -> None:
    prepare_dataset(videos, tmp_path / "raw", workers=0, progress=False)
    s = repack(tmp_path / "raw", tmp_path / "packed", "packed", progress=False)
    assert (s.converted, s.failures, s.files_after) == (3, [], 3)
    back = repack(tmp_path / "packed", tmp_path / "back", "rawframes", progress=False)
    assert (back.converted, back.files_after) == (3, 31 + 2 * 28)
    for key in ("A/a1", "A/a2", "B/b 1"):
        for f in sorted((tmp_path / "raw" / key).iterdir()):
            assert (tmp_path / "back" / key / f.name).read_bytes() == f.read_bytes()
    again = repack(tmp_path / "raw", tmp_path / "packed", "packed", progress=False)
    assert (again.done_before, again.converted) == (3, 0)
    assert load_manifest(tmp_path / "packed").videos == {
        k: v for k, v in load_manifest(tmp_path / "raw").videos.items()}
    assert (tmp_path / "packed/rawframes.txt").read_text() == (tmp_path / "raw/rawframes.txt").read_text()
    # `stfn prepare` into the repacked folder skips what is there and prepares only what is new
    shutil.copy(videos / "A/a1.mp4", videos / "A/a3.mp4")
    s = prepare_dataset(videos, tmp_path / "packed", workers=0, progress=False, storage="packed")
    assert (s.done_before, s.processed) == (4, 1)


def test_repack_records_a_video_it_cannot_read_and_refuses_what_makes_no_sense(videos: Path, tmp_path: Path) -> None:
    prepare_dataset(videos, tmp_path / "packed", workers=0, progress=False, storage="packed")
    _damage(tmp_path / "packed" / "A/a2.stfnpack", "index past the end")
    s = repack(tmp_path / "packed", tmp_path / "raw", "rawframes", progress=False)
    assert [k for k, _ in s.failures] == ["A/a2"] and "damaged index" in s.failures[0][1]
    rec = load_manifest(tmp_path / "raw").videos["A/a2"]
    assert rec["status"] == "failed" and "A/a2.stfnpack" in rec["error"] and not (tmp_path / "raw/A/a2").exists()
    journal = (tmp_path / "raw" / STATE_DIR / "journal.jsonl").read_text()
    assert '"A/a2"' not in journal and '"A/a1"' in journal  # prepare into it redoes A/a2 from its video
    with pytest.raises(StfnError, match="is already stored as packed"):
        repack(tmp_path / "packed", tmp_path / "p2", "packed", progress=False)
    with pytest.raises(StfnError, match="must be outside"):
        repack(tmp_path / "raw", tmp_path / "raw" / "inside", "packed", progress=False)


def test_stfn_prepare_format_packed_on_the_command_line(videos: Path, tmp_path: Path, capsys) -> None:
    from stfn.cli import main

    assert main(["prepare", str(videos), str(tmp_path / "p"), "--format", "packed", "--workers", "0", "--quiet"]) == 1
    assert "3 of 4 videos prepared" in capsys.readouterr().out  # bad.mp4 failed, recorded
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["format"] == "packed"
    assert sorted(p.name for p in (tmp_path / "p").rglob("*.stfnpack")) == ["a1.stfnpack", "a2.stfnpack", "b 1.stfnpack"]
