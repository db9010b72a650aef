"""`stfn prepare`: layout, manifest, list files, shards, resume (kill -9 and worker crashes: test_pool.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stfn.data.prepare.manifest import load_manifest
from stfn.data.prepare.run import prepare_dataset
from stfn.data.prepare.state import parse_shard
from stfn.data.video import flow as F
from stfn.data.video.decode import read_video
from stfn.errors import StfnError

pytestmark = pytest.mark.timeout(300)

@pytest.fixture
def video_tree(video_factory, tmp_path: Path) -> Path:
    """videos/A/a1.mp4 (12 frames), A/a2.mp4 (9), B/b1.avi (10, MPEG-4), B/bad.mp4 (not a video)."""
    video_factory("A/a1.mp4", n=12)
    video_factory("A/a2.mp4", n=9, seed=1)
    video_factory("B/b1.avi", n=10, codec="mpeg4", seed=2)
    (tmp_path / "videos" / "B" / "bad.mp4").write_bytes(b"\x00not a video" * 50)
    (tmp_path / "videos" / "B" / "notes.txt").write_text("ignored: not a video extension")
    return tmp_path / "videos"


EXPECTED = {"A/a1": 12, "A/a2": 9, "B/b1": 10}


def test_prepare_writes_frames_flow_manifest_and_lists(video_tree: Path, tmp_path: Path, check_prepared) -> None:
    import cv2

    out = tmp_path / "out"
    s = prepare_dataset(video_tree, out, workers=0, progress=False)
    assert (s.total, s.ok, s.failed, s.processed, s.done_before) == (4, 3, 1, 4, 0)
    assert s.frames == sum(EXPECTED.values())
    assert s.failures[0][0] == "B/bad" and "bad.mp4" in s.failures[0][1]
    check_prepared(out, EXPECTED, {"B/bad"})
    m = load_manifest(out)
    assert m.flow == {"algorithm": "dis", "preset": F.DEFAULT_DIS_PRESET, "bound": 20.0} and m.flow_bound == 20.0
    assert m.videos["A/a1"] == {"source": "A/a1.mp4", "status": "ok", "frames": 12, "flows": 11,
                                "width": 64, "height": 48, "fps": 25.0, "error": None}
    assert "B/bad" in str(s) and "3 of 4 videos" in str(s)
    assert (out / "rawframes_flow.txt").read_text().splitlines() == ["A/a1 11", "A/a2 8", "B/b1 9"]

    # the frames are the decoded frames (JPEG q95), the flow images hold the motion
    decoded = read_video(video_tree / "A/a1.mp4", backend="pyav")
    img = cv2.cvtColor(cv2.imread(str(out / "A/a1/img_00003.jpg")), cv2.COLOR_BGR2RGB)
    err = [np.abs(img.astype(int) - decoded[k]).mean() for k in range(12)]
    assert int(np.argmin(err)) == 2 and err[2] < 10  # img_00003 is frame 2 (0-based), JPEG-compressed
    fx = cv2.imread(str(out / "A/a1/flow_x_00001.jpg"), cv2.IMREAD_UNCHANGED)
    fy = cv2.imread(str(out / "A/a1/flow_y_00001.jpg"), cv2.IMREAD_UNCHANGED)
    assert fx.shape == fy.shape == (48, 64) and fx.dtype == np.uint8  # one gray JPEG per component
    # the textured patch (rows 12..35, cols 0..20 in frame 1) moves right by 2 px per frame
    vx, vy = F.dequantize_flow(fx[16:32, 4:16], 20.0), F.dequantize_flow(fy[16:32, 4:16], 20.0)
    assert abs(np.median(vx) - 2.0) < 0.75 and abs(np.median(vy)) < 0.5


def test_resume_redoes_only_what_is_missing(video_tree: Path, video_factory, tmp_path: Path, check_prepared) -> None:
    out = tmp_path / "out"
    prepare_dataset(video_tree, out, workers=0, progress=False)
    (out / "A/a1/flow_y_00011.jpg").unlink()  # damaged after the fact
    shutil.rmtree(out / "B/b1")  # deleted
    video_factory("A/a2.mp4", n=14, seed=5)  # source replaced: its stamp changed
    video_factory("C/c1.mp4", n=8)  # new video
    s = prepare_dataset(video_tree, out, workers=0, progress=False)
    assert (s.done_before, s.processed) == (1, 4)  # bad.mp4 stays failed without retry
    check_prepared(out, {**EXPECTED, "A/a2": 14, "C/c1": 8}, {"B/bad"})
    s = prepare_dataset(video_tree, out, workers=0, progress=False, retry_failed=True)
    assert (s.done_before, s.processed, s.failed) == (4, 1, 1)
    with pytest.raises(StfnError, match="other settings"):
        prepare_dataset(video_tree, out, flow="farneback", workers=0, progress=False)


def test_resize_no_flow_single_file_and_list(video_tree: Path, tmp_path: Path, frame_counts) -> None:
    s = prepare_dataset(video_tree, tmp_path / "o1", flow="none", short_side=24, workers=0, progress=False)
    m = load_manifest(tmp_path / "o1")
    assert s.ok == 3 and (m.videos["A/a1"]["width"], m.videos["A/a1"]["height"]) == (32, 24)
    assert m.videos["A/a1"]["flows"] == 0 and not (tmp_path / "o1/rawframes_flow.txt").exists()
    assert frame_counts(tmp_path / "o1/A/a1") == (12, 0, 0)
    assert m.resize == {"short_side": 24}

    prepare_dataset(video_tree / "A/a2.mp4", tmp_path / "o2", size=(40, 30), workers=0, progress=False)
    m = load_manifest(tmp_path / "o2")
    assert list(m.videos) == ["a2"] and (m.videos["a2"]["width"], m.videos["a2"]["height"]) == (40, 30)
    assert frame_counts(tmp_path / "o2/a2") == (9, 8, 8)

    listing = tmp_path / "trainlist.txt"  # UCF101 style: CRLF, a label column
    listing.write_bytes(b"B/b1.avi 2\r\nA/a1.mp4 1\r\n")
    prepare_dataset(video_tree, tmp_path / "o3", list_file=listing, workers=0, progress=False)
    assert sorted(load_manifest(tmp_path / "o3").videos) == ["A/a1", "B/b1"]
    listing.write_text("A/a1.mp4\nA/missing.mp4\n")
    with pytest.raises(StfnError, match="missing.mp4"):
        prepare_dataset(video_tree, tmp_path / "o4", list_file=listing, workers=0, progress=False)
    with pytest.raises(StfnError, match="does not exist"):
        prepare_dataset(tmp_path / "nowhere", tmp_path / "o5", workers=0, progress=False)
    with pytest.raises(StfnError, match="no manifest"):
        load_manifest(tmp_path / "o5")


def test_shards_split_the_work_and_merge(video_tree: Path, tmp_path: Path, check_prepared) -> None:
    out = tmp_path / "out"
    a = prepare_dataset(video_tree, out, shard=(0, 2), workers=0, progress=False)
    b = prepare_dataset(video_tree, out, shard="1/2", workers=0, progress=False)
    assert (a.total, b.total) == (2, 2)
    first = json.loads((out / "manifest-shard0of2.json").read_text())["videos"]
    second = json.loads((out / "manifest-shard1of2.json").read_text())["videos"]
    assert not set(first) & set(second) and len(first) + len(second) == 4
    check_prepared(out, EXPECTED, {"B/bad"})
    assert parse_shard(None) == (0, 1)
    for bad in ("2/2", "x", "1/0"):
        with pytest.raises(StfnError):
            parse_shard(bad)


def test_dangling_symlinks_and_loops_fail_alone(video_factory, tmp_path: Path) -> None:
    """A dangling symlink or a symlink loop in the video tree is a failure of that entry, recorded and
    summarised, and the run goes on (it used to stop before any video, on a stat of the source)."""
    video_factory("A/good.mp4", n=6)
    videos = tmp_path / "videos"
    (videos / "A" / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (videos / "A" / "loop.mp4").symlink_to("loop.mp4")
    (videos / "A" / "up").symlink_to("..")  # a symlinked folder is not followed
    out = tmp_path / "out"
    summary = prepare_dataset(videos, out, workers=1, progress=False)
    assert (summary.failed, sorted(k for k, _ in summary.failures)) == (2, ["A/dangling", "A/loop"])
    errors = dict(summary.failures)
    assert "is a symbolic link to" in errors["A/dangling"] and "which does not exist" in errors["A/dangling"]
    assert errors["A/loop"].endswith("is a symbolic link loop")
    m = load_manifest(out)
    assert m.videos["A/good"]["status"] == "ok" and m.videos["A/loop"]["status"] == "failed"
    again = prepare_dataset(videos, out, workers=1, progress=False)  # journalled: nothing is redone
    assert again.failed == 2 and again.done_before == 3


def test_a_full_disk_stops_prepare_and_the_same_command_finishes_the_job(video_tree: Path, tmp_path: Path,
                                                                         monkeypatch, capsys) -> None:
    """Issue 17 items 5 and 6: no space left in the middle of a video (cv2.imwrite fails, as it does on
    ENOSPC) stops the run with one sentence naming the file; nothing is journalled for that video, so
    the same command run again (with space) prepares it, without --retry-failed."""
    import cv2

    from stfn.cli import main

    real, calls = cv2.imwrite, {"n": 0}

    def full_after_30_images(path, image, params=()):
        calls["n"] += 1
        return False if calls["n"] > 30 else real(path, image, params)

    monkeypatch.setattr(cv2, "imwrite", full_after_30_images)
    monkeypatch.setattr("stfn.data.prepare.run.shutil.disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    out = tmp_path / "out"
    assert main(["prepare", str(video_tree), str(out), "--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no space left on the device" in err and "run the same command again" in err and "\n" not in err, err
    assert str(out) in err and ".jpg'" in err
    monkeypatch.setattr(cv2, "imwrite", real)
    summary = prepare_dataset(video_tree, out, workers=0, progress=False)
    assert summary.ok == 3 and [k for k, _ in summary.failures] == ["B/bad"]


def test_write_failures_journalled_by_an_older_version_are_redone(video_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(video_tree, out, workers=0, progress=False)
    journal = out / ".stfn-prepare" / "journal.jsonl"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    for rec in lines:
        if rec["key"] == "A/a2":
            rec.update(status="failed", frames=0, flows=0, error=f"cannot write '{out}/x.jpg' (disk full or not writable?)")
    journal.write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = prepare_dataset(video_tree, out, workers=0, progress=False)
    assert summary.processed == 1 and summary.ok == 3


def test_an_output_folder_that_is_a_file_or_read_only_is_one_sentence(video_tree: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    from stfn import fileio

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(StfnError, match=r"output folder '.*a_file' is a file, not a folder"):
        prepare_dataset(video_tree, a_file, workers=0, progress=False)

    def read_only(path):
        raise PermissionError(30, "Read-only file system", str(path))

    monkeypatch.setattr(fileio, "_temp_file", read_only)
    with pytest.raises(StfnError, match=r"output folder '.*out' cannot be written: Read-only file system"):
        prepare_dataset(video_tree, tmp_path / "out", workers=0, progress=False)


def test_names_with_spaces_are_left_out_of_the_mmaction2_lists_with_a_warning(video_factory, tmp_path: Path) -> None:
    """Issue 17 item 10: MMAction2 splits rawframes.txt lines on whitespace, so 'A/my clip 12' would break
    its whole list: such videos are prepared and in the manifest (stfn uses them), left out of the list
    files, and the summary says so."""
    video_factory("A/my clip.mp4", n=5)
    video_factory("A/plain.mp4", n=6)
    out = tmp_path / "out"
    summary = prepare_dataset(tmp_path / "videos", out, workers=0, progress=False)
    assert summary.ok == 2 and summary.unlisted == ["A/my clip"]
    assert load_manifest(out).videos["A/my clip"]["status"] == "ok"
    assert (out / "rawframes.txt").read_text() == "A/plain 6\n"
    assert (out / "rawframes_flow.txt").read_text() == "A/plain 5\n"
    assert "1 video name with spaces left out of rawframes*.txt" in str(summary) and "'A/my clip'" in str(summary)
