"""`stfn predict`: real videos from ../shared, a tiny random-weight model, flow computed on the fly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from stfn.cli import main
from stfn.config import config_from_dict
from stfn.data import clip_reader
from stfn.data.prepare.record import resolve_prepare_settings
from stfn.data.video.flow import parse_flow_spec
from stfn.errors import StfnError
from stfn.predict import Predictor, expand_inputs
from stfn.runtime import cpu_supports_bf16  # --amp auto: bf16 only where the CPU runs it natively
from suite_helpers import VIDEOS, save_tiny_checkpoint

TEST_AVI = VIDEOS / "test.avi"
CORRUPT = VIDEOS / "corrupted.mp4"
needs_videos = pytest.mark.shared("videos/test.avi", "videos/corrupted.mp4", "videos/flipping_a_pancake.mkv")

CLASSES = ["Jump", "Run", "Walk", "Wave", "Clap"]


def tiny_config(streams=("rgb", "flow"), **data):
    """A cnn_small STFN with 4 frames of 32 px: fast enough for many CLI calls on one core."""
    return config_from_dict({
        "name": "predict-test",
        "model": {"arch": "stfn", "streams": list(streams), "num_classes": len(CLASSES), "backbone": "cnn_small",
                  "flow_length": 2, "head": {"hidden_dim": 16, "blocks": 1, "dropout": 0.0}},
        "data": {"frames": 4, "scale_size": 36, "crop_size": 32, "test_crops": 1, **data},
        "train": {"amp": "none"},
    })


def save_checkpoint(path: Path, cfg, extra: dict | None = None) -> Path:
    return save_tiny_checkpoint(path, cfg, CLASSES, extra)


@pytest.fixture(scope="module")
def two_stream_ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "two_stream.pt", tiny_config())


@pytest.fixture(scope="module")
def rgb_ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "rgb.pt", tiny_config(streams=("rgb",)))


@needs_videos
def test_good_and_corrupt_video_in_one_call(two_stream_ckpt, capsys):
    rc = main(["predict", str(two_stream_ckpt), str(TEST_AVI), str(CORRUPT), "--top-k", "3"])
    out, err = capsys.readouterr()
    assert rc == 1  # one file failed
    assert torch.is_grad_enabled()  # the command leaves the process's autograd mode as it was
    lines = out.strip().splitlines()
    assert lines[0] == f"{TEST_AVI}:"
    probs = []
    for rank, line in enumerate(lines[1:], 1):
        num, name, prob = line.split()
        assert num == f"{rank}." and name in CLASSES
        probs.append(float(prob))
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    assert "corrupted.mp4" not in out
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "corrupted.mp4" in errors[0] and "Traceback" not in err


@needs_videos
def test_json_output(two_stream_ckpt, capsys):
    rc = main(["predict", str(two_stream_ckpt), str(TEST_AVI), str(CORRUPT), "--json", "--top-k", "2", "--frames", "6"])
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert rc == 1 and doc["failed"] == 1 and doc["checkpoint"] == str(two_stream_ckpt)
    r, bad = doc["results"]
    assert bad == {"video": str(CORRUPT), "ok": False, "error": bad["error"]} and "corrupted.mp4" in bad["error"]
    assert bad["error"] in captured.err  # the error line is printed too
    s = doc["settings"]
    assert s["streams"] == ["rgb", "flow"] and s["frames"] == 6 and s["crops"] == 1
    assert s["amp"] == ("bfloat16" if cpu_supports_bf16() else "none")
    assert s["flow"]["algorithm"] == "dis" and s["flow"]["bound"] == 20.0 and s["resize"] == {"short_side": 36}
    assert r["ok"] and r["video"] == str(TEST_AVI) and r["frames"] == 164 and r["fps"] == pytest.approx(25.0)
    assert [t["class"] for t in r["top"]] == [CLASSES[t["index"]] for t in r["top"]]
    assert r["top"][0]["prob"] >= r["top"][1]["prob"] > 0
    assert set(r["timings"]) == {"decode", "flow", "transform", "network", "total"}
    assert all(v >= 0 for v in r["timings"].values()) and r["timings"]["flow"] > 0
    parts = sum(r["timings"][k] for k in ("decode", "flow", "transform", "network"))
    assert parts <= r["timings"]["total"] + 1e-3


@needs_videos
def test_scores_equal_full_decode_and_full_flow(tmp_path):
    """Sparse decoding and flow of only the sampled stacks give what the whole video would give,
    with the resize and flow bound that the checkpoint records for its training data."""
    from stfn.data.sampling import sample_clip
    from stfn.data.transforms import build_transform
    from stfn.data.video.decode import read_video
    from stfn.data.video.flow import create_estimator, quantize_flow
    from stfn.engine.checkpoint import load_model

    prepare = {"flow": {"algorithm": "dis", "preset": "fast", "bound": 2.0}, "resize": {"short_side": 40}}
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", tiny_config(), {"prepare": prepare})
    predictor = Predictor.from_checkpoint(ckpt, crops=3, device="cpu", amp="none")
    result = predictor.predict(TEST_AVI, top_k=len(CLASSES))

    model, cfg, _ = load_model(ckpt)
    frames = read_video(TEST_AVI, size=(53, 40))  # 320x240 -> short side 40
    n = len(frames)
    idx = sample_clip(n, n - 1, cfg.data.frames, 2, train=False)
    flow = quantize_flow(create_estimator("dis", preset="fast")(frames), 2.0)  # a fresh DIS: see below  # (N-1, H, W, 2), every field
    clip = {
        "rgb": torch.from_numpy(frames[idx.rgb]).permute(0, 3, 1, 2).contiguous(),
        "flow": torch.from_numpy(np.stack([np.concatenate([flow[k].transpose(2, 0, 1) for k in s]) for s in idx.flow])),
    }
    got_clip = predictor.reader.load_clip(TEST_AVI)
    assert torch.equal(got_clip["rgb"], clip["rgb"]) and torch.equal(got_clip["flow"], clip["flow"])
    assert clip["flow"].float().std() > 1  # real motion in the stacks, not a constant
    views = build_transform(cfg.data, train=False, views=3)(clip)
    with torch.no_grad():
        expected = model({"rgb": views["rgb"], "flow": views["flow"]}).mean(0).softmax(0)
    got = torch.zeros(len(CLASSES))
    for t in result["top"]:
        got[t["index"]] = t["prob"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert result["frames"] == n == 164


@needs_videos
def test_only_sampled_flow_fields_are_computed(two_stream_ckpt, monkeypatch):
    import stfn.data.video.flow as flow_mod

    pairs = []
    real = flow_mod.create_estimator

    def counting(*args, **kwargs):
        estimator = real(*args, **kwargs)

        def run(frames):
            pairs.append(len(frames) - 1)
            return estimator(frames)
        return run

    monkeypatch.setattr(clip_reader, "create_estimator", counting)
    predictor = Predictor.from_checkpoint(two_stream_ckpt, device="cpu", amp="none")
    clip = predictor.reader.load_clip(TEST_AVI)
    assert clip["flow"].shape == (4, 4, 36, 48) and clip["flow"].dtype == torch.uint8
    assert 0 < sum(pairs) <= 4 * 2  # T stacks of L fields, not the 163 fields of the video
    assert clip["rgb"].shape == (4, 3, 36, 48)


@needs_videos
def test_rgb_only_model_computes_no_flow(rgb_ckpt, monkeypatch, capsys):
    import stfn.data.video.flow as flow_mod

    def forbidden(*args, **kwargs):
        raise AssertionError("an RGB-only model must not compute optical flow")

    monkeypatch.setattr(flow_mod, "compute_flow", forbidden)
    monkeypatch.setattr(clip_reader, "create_estimator", forbidden)
    rc = main(["predict", str(rgb_ckpt), str(TEST_AVI), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["settings"]["streams"] == ["rgb"] and doc["settings"]["flow"] is None
    assert doc["results"][0]["ok"]
    clip = Predictor.from_checkpoint(rgb_ckpt, device="cpu").reader.load_clip(TEST_AVI)
    assert "flow" not in clip and clip["rgb"].shape == (4, 3, 36, 48)


@needs_videos
def test_folder_expands_to_the_videos_in_it(rgb_ckpt, tmp_path, capsys):
    (tmp_path / "b").mkdir()
    shutil.copy(TEST_AVI, tmp_path / "one.avi")
    shutil.copy(TEST_AVI, tmp_path / "b" / "two.AVI")
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "empty").mkdir()
    assert expand_inputs([tmp_path]) == [tmp_path / "b" / "two.AVI", tmp_path / "one.avi"]
    rc = main(["predict", str(rgb_ckpt), str(tmp_path), "--json", "--top-k", "1"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["video"] for r in doc["results"]] == [str(tmp_path / "b" / "two.AVI"), str(tmp_path / "one.avi")]
    assert doc["results"][0]["top"] == doc["results"][1]["top"]  # same content, same answer
    rc = main(["predict", str(rgb_ckpt), str(tmp_path / "empty"), str(tmp_path / "missing.mp4")])
    err = capsys.readouterr().err
    assert rc == 1 and "holds no video files" in err and "missing.mp4' does not exist" in err


def test_short_and_one_frame_videos(tmp_path, two_stream_ckpt):
    """Fewer frames than T, and a single frame (no flow at all: zero motion), still predict."""
    import av

    for n in (1, 3):
        path = tmp_path / f"short{n}.mp4"
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            for i in range(n):
                img = np.full((48, 64, 3), 40 * i, np.uint8)
                img[10:20, 5 + 10 * i : 15 + 10 * i] = 255
                c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            c.mux(s.encode())
        predictor = Predictor.from_checkpoint(two_stream_ckpt, device="cpu")
        clip = predictor.reader.load_clip(path)
        assert clip["num_frames"] == n and clip["flow"].shape == (4, 4, 36, 48)
        if n == 1:
            assert bool((clip["flow"] == 128).all())
        result = predictor.predict(path)
        assert result["ok"] and len(result["top"]) == 5


def test_prepare_settings_resolution(tmp_path):
    cfg = tiny_config()
    s = resolve_prepare_settings(cfg, {})
    assert (s.short_side, s.size, s.flow["algorithm"], s.bound) == (36, None, "dis", 20.0)

    root = tmp_path / "prepared"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({
        "version": 1, "flow": {"algorithm": "farneback", "bound": 15.0}, "resize": {"short_side": 40}, "videos": {}}))
    cfg = tiny_config(root=str(root))
    s = resolve_prepare_settings(cfg, {})
    assert (s.short_side, s.flow["algorithm"], s.bound) == (40, "farneback", 15.0) and "manifest" in s.source

    ckpt = {"prepare": {"flow": {"algorithm": "dis", "preset": "medium", "bound": 10.0},
                        "resize": {"size": [60, 40]}}}
    s = resolve_prepare_settings(cfg, ckpt)
    assert (s.short_side, s.size, s.flow_name(), s.bound) == (None, (60, 40), "dis:medium", 10.0)
    s = resolve_prepare_settings(cfg, ckpt, flow="tvl1")  # --flow changes the algorithm, keeps the bound
    assert (s.flow_name(), s.bound) == ("tvl1", 10.0)
    # prepared without resizing: the frames keep their source size
    s = resolve_prepare_settings(cfg, {"prepare": {"flow": {"algorithm": "dis", "bound": 20.0}, "resize": {}}})
    assert (s.short_side, s.size) == (None, None) and "checkpoint" in s.source


def test_flow_spec_errors():
    assert parse_flow_spec("dis:ultrafast") == {"algorithm": "dis", "preset": "ultrafast"}
    assert parse_flow_spec("raft:large") == {"algorithm": "raft", "model": "large"}
    with pytest.raises(StfnError, match="unknown flow algorithm 'lk'"):
        parse_flow_spec("lk")
    with pytest.raises(StfnError, match="not an option"):
        parse_flow_spec("tvl1:fast")


def test_bad_checkpoint_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["predict", str(bad), str(TEST_AVI)]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and len(err.strip().splitlines()) == 1
    assert main(["predict", str(tmp_path / "none.pt"), str(TEST_AVI)]) == 2
    assert "does not exist" in capsys.readouterr().err


@needs_videos
def test_inputs_match_what_stfn_prepare_wrote(tmp_path):
    """Predict's on-the-fly frames and flow equal the prepared JPEGs a model trains on (up to JPEG loss),
    with the resize and flow settings read from the manifest in data.root."""
    import cv2

    import stfn.data.video.flow as flow_mod
    from stfn.data.prepare.run import prepare_dataset
    from stfn.data.sampling import sample_clip

    (tmp_path / "videos" / "Cls").mkdir(parents=True)
    shutil.copy(TEST_AVI, tmp_path / "videos" / "Cls" / "test.avi")
    root = tmp_path / "prepared"
    # stfn.data.video.flow caches one DIS object per process, and DIS keeps a lowered pyramid depth after
    # a smaller frame (earlier tests): start from a fresh one, as a new `stfn prepare` process would.
    flow_mod._cached.cache_clear()
    prepare_dataset(tmp_path / "videos", root, flow="dis", bound=4.0, short_side=40, workers=0, progress=False)
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", tiny_config(root=str(root)))
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    assert predictor.reader.prepare.short_side == 40 and predictor.reader.prepare.bound == 4.0
    clip = predictor.reader.load_clip(TEST_AVI)

    folder = root / "Cls" / "test"
    n = len(list(folder.glob("img_*.jpg")))
    idx = sample_clip(n, n - 1, 4, 2, train=False)
    rgb = np.stack([cv2.cvtColor(cv2.imread(str(folder / f"img_{p + 1:05d}.jpg")), cv2.COLOR_BGR2RGB) for p in idx.rgb])
    flow = np.stack([np.stack([cv2.imread(str(folder / f"flow_{c}_{k + 1:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
                               for k in stack for c in "xy"]) for stack in idx.flow])
    assert clip["num_frames"] == n
    rgb_err = (clip["rgb"].float() - torch.from_numpy(rgb).permute(0, 3, 1, 2).float()).abs().mean()
    flow_err = (clip["flow"].float() - torch.from_numpy(flow).float()).abs().mean()
    assert rgb_err < 4 and flow_err < 0.5, (rgb_err, flow_err)  # JPEG (quality 95) loss only
    assert clip["flow"].float().std() > 2  # bound 4 px: real motion, compared value by value


def test_autocast_precisions(two_stream_ckpt):
    fp32 = Predictor.from_checkpoint(two_stream_ckpt, device="cpu", amp="none")
    bf16 = Predictor.from_checkpoint(two_stream_ckpt, device="cpu", amp="bf16")
    assert fp32.settings()["amp"] == "none" and bf16.settings()["amp"] == "bfloat16"
    clip = fp32.reader.load_clip(TEST_AVI) if TEST_AVI.is_file() else None
    if clip is not None:
        views = fp32.transform({s: clip[s] for s in fp32.streams})
        a, b = fp32.scores(views), bf16.scores(views)
        assert a.dtype == b.dtype == torch.float32 and not torch.equal(a, b)  # bf16 really ran
        torch.testing.assert_close(b, a, atol=0.05, rtol=0.05)
    with pytest.raises(StfnError, match="^amp is fp16, which needs a CUDA device"):
        Predictor.from_checkpoint(two_stream_ckpt, device="cpu", amp="fp16")


@needs_videos
def test_flow_does_not_depend_on_earlier_videos(two_stream_ckpt, tmp_path):
    """A small video before a large one must not change the large one's flow (OpenCV DIS keeps state)."""
    import av

    small = tmp_path / "small.mp4"
    with av.open(str(small), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
        for i in range(6):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((16, 16, 3), 30 * i, np.uint8), format="rgb24")))
        c.mux(s.encode())
    prepare = {"flow": {"algorithm": "dis", "preset": "fast", "bound": 2.0}, "resize": {}}  # source sizes
    ckpt = save_checkpoint(tmp_path / "native.pt", tiny_config(), {"prepare": prepare})
    first = Predictor.from_checkpoint(ckpt, device="cpu").reader.load_clip(TEST_AVI)["flow"]
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    predictor.reader.load_clip(small)
    assert torch.equal(predictor.reader.load_clip(TEST_AVI)["flow"], first)


@needs_videos
def test_container_without_exact_frame_count(rgb_ckpt):
    """MKV headers hold no frame count: the whole file is decoded once to know N, then sampled."""
    mkv = VIDEOS / "flipping_a_pancake.mkv"
    result = Predictor.from_checkpoint(rgb_ckpt, device="cpu").predict(mkv, top_k=1)
    assert result["ok"] and result["frames"] == 310 and result["top"][0]["class"] in CLASSES


def test_one_failing_file_does_not_stop_the_others(rgb_ckpt, tmp_path, monkeypatch):
    predictor = Predictor.from_checkpoint(rgb_ckpt, device="cpu")
    fake = tmp_path / "notavideo.mp4"
    fake.write_text("hello")
    real = predictor.reader.load_clip

    def flaky(path, timings=None):
        if Path(path).name == "boom.avi":
            raise RuntimeError("decoder exploded")
        return real(path, timings)

    monkeypatch.setattr(predictor.reader, "load_clip", flaky)
    good = [TEST_AVI] if TEST_AVI.is_file() else []
    results = list(predictor.predict_many([fake, tmp_path / "boom.avi", *good], top_k=1))
    assert [r["ok"] for r in results] == [False, False] + [True] * len(good)
    assert "notavideo.mp4" in results[0]["error"]
    assert results[1]["error"] == f"'{tmp_path / 'boom.avi'}' could not be processed (RuntimeError: decoder exploded)"


def _avi_whose_header_says(path: Path, frames: int, header: int) -> Path:
    """An MPEG-4 AVI of ``frames`` frames (each a different grey) whose headers (avih dwTotalFrames, strh
    dwLength) say ``header``."""
    import struct
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(25, 1))
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            image = np.full((32, 32, 3), int(255 * i / frames), np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.find(b"avih") + 8 + 16, header)
    struct.pack_into("<I", data, data.find(b"strh") + 8 + 32, header)
    path.write_bytes(bytes(data))
    return path


def test_a_header_that_undercounts_the_frames_is_not_trusted(rgb_ckpt, tmp_path, capsys):
    """Issue 17 item 4: an AVI whose header says 5 frames but that holds 100 is sampled from all 100
    (what decoding finds, as stfn prepare counts), with a warning; it used to read the first 5 only."""
    video = _avi_whose_header_says(tmp_path / "lying.avi", 100, 5)
    from stfn.data.video.decode import probe

    assert probe(video).frames == 5
    assert main(["predict", str(rgb_ckpt), str(video), "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)["results"][0]
    assert result["frames"] == 100 and "header says 5 frames but 100 decode" in out.err
