"""Decoding: counts and metadata on real files, sparse == full, backend parity, clean errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from stfn.data.video import decode as V
from stfn.errors import StfnError

pytestmark = pytest.mark.timeout(120)

# file -> (decoded frames, fps, width, height)
REAL = {
    "test.avi": (164, 25.0, 320, 240),
    "demo.mp4": (280, 28.0, 340, 256),
    "flipping_a_pancake.mkv": (310, 30.0, 426, 240),
}


@pytest.fixture(scope="module")
def video_decoded(video_shared: Path) -> dict[str, np.ndarray]:
    """Full PyAV decodes of the real files, shared by the tests of this module."""
    return {name: V.read_video(video_shared / name, backend="pyav") for name in REAL}


@pytest.mark.parametrize("name", list(REAL))
def test_probe_and_full_decode_of_real_files(video_shared: Path, video_decoded, name: str) -> None:
    frames, fps, w, h = REAL[name]
    info = V.probe(video_shared / name)
    assert (info.fps, info.width, info.height) == (fps, w, h)
    assert abs(info.frames - frames) <= 2  # the MKV has no count in its header: duration * fps
    assert info.frames_exact == (name != "flipping_a_pancake.mkv")
    full = video_decoded[name]
    assert full.shape == (frames, h, w, 3) and full.dtype == np.uint8
    assert full.std() > 10  # real pictures, not blank frames
    # streaming decode gives the same frames
    for k, frame in enumerate(V.iter_frames(video_shared / name, threads=1)):
        if k in (0, frames // 2, frames - 1):
            np.testing.assert_array_equal(frame, full[k])
    assert k == frames - 1


@pytest.mark.parametrize("name", list(REAL))
def test_sparse_decode_equals_full_decode(video_shared: Path, video_decoded, name: str) -> None:
    full = video_decoded[name]
    n = len(full)
    indices = [n - 1, 0, 7, 7, n // 2, 1, n - 2, n // 3]  # unsorted, repeated, both ends
    sparse = V.read_frames(video_shared / name, indices, backend="pyav")
    np.testing.assert_array_equal(sparse, full[indices])


def test_resize_on_decode(video_factory) -> None:
    path = video_factory("r.mp4", n=5, size=(64, 48))
    assert V.resize_shape(64, 48, short_side=24) == (32, 24)
    assert V.resize_shape(320, 240, short_side=256) == (341, 256)
    assert V.resize_shape(64, 48, size=(40, 30)) == (40, 30)
    assert V.resize_shape(64, 48) == (64, 48)
    with pytest.raises(StfnError):
        V.resize_shape(64, 48, short_side=24, size=(40, 30))
    out = V.read_video(path, size=(32, 24), backend="pyav")
    assert out.shape == (5, 24, 32, 3)
    sparse = V.read_frames(path, [4, 0], size=(32, 24), backend="pyav")
    np.testing.assert_array_equal(sparse, out[[4, 0]])


@pytest.mark.skipif("torchcodec" not in V.available_backends(),
                    reason="torchcodec is not installed or cannot load the FFmpeg shared libraries")
@pytest.mark.parametrize("name", list(REAL) + ["generated.mp4"])
def test_torchcodec_gives_the_same_frames_as_pyav(video_shared: Path, video_decoded, video_factory, name: str) -> None:
    if name == "generated.mp4":
        path = video_factory(name, n=40)
        full = V.read_video(path, backend="pyav")
    else:
        path, full = video_shared / name, video_decoded[name]
    if name in ("generated.mp4", "demo.mp4"):  # whole-file decode (the AVI goes to PyAV by design)
        np.testing.assert_array_equal(V.read_video(path, backend="torchcodec"), full)
    indices = [len(full) - 1, 0, 5, 5, len(full) // 2]
    np.testing.assert_array_equal(V.read_frames(path, indices, backend="torchcodec"), full[indices])


def test_backend_names() -> None:
    with pytest.raises(StfnError, match="unknown video backend"):
        V.read_frames("x.mp4", [0], backend="decord")
    assert V.available_backends()[0] == "pyav"


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize("backend", ["pyav", "torchcodec"])
def test_bad_files_raise_one_clear_error(video_shared: Path, tmp_path: Path, backend: str) -> None:
    if backend not in V.available_backends():
        pytest.skip("torchcodec is not installed or cannot load the FFmpeg shared libraries")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.avi"
    text.write_text("not a video\n" * 100)
    cases = {
        video_shared / "corrupted.mp4": "corrupt",
        _truncate(video_shared / "test.avi", tmp_path / "half.avi", 0.5): "truncated",
        _truncate(video_shared / "flipping_a_pancake.mkv", tmp_path / "half.mkv", 0.5): "truncated",
        _truncate(video_shared / "demo.mp4", tmp_path / "half.mp4", 0.9): "not a readable video",
        empty: "is empty",
        text: "not a readable video",
        tmp_path / "missing.mp4": "does not exist",
    }
    for path, words in cases.items():
        with pytest.raises(V.VideoError, match=words) as err:
            V.read_video(path, backend=backend)
        assert str(path) in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(V.VideoError, match="out of range"):
        V.read_frames(video_shared / "test.avi", [0, 164], backend=backend)
    for path in [empty, text, tmp_path / "missing.mp4"]:
        with pytest.raises(V.VideoError, match=str(path)):
            V.probe(path)
    # a copy with nothing cut off still decodes whole
    whole = shutil.copy(video_shared / "test.avi", tmp_path / "copy.avi")
    assert len(V.read_video(whole, backend=backend)) == 164


def _sideways_video(path: Path, rotation: int, n: int = 6) -> Path:
    """An H.264 MP4 coded 64x32 with a white band on its left 16 columns, and a display matrix that
    rotates it ``rotation`` degrees counter-clockwise (as a phone writes a video filmed upright)."""
    from fractions import Fraction

    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25, 1))
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(rotation)
        for _ in range(n):
            image = np.zeros((32, 64, 3), np.uint8)
            image[:, :16] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_a_rotated_phone_video_is_decoded_upright(tmp_path: Path) -> None:
    """Issue 17 item 10: the display matrix turns the frames (90 degrees counter-clockwise: the left band
    ends at the bottom); probe gives the displayed size, so prepare resizes and stores them upright."""
    from stfn.data.prepare.run import prepare_dataset

    video = _sideways_video(tmp_path / "videos" / "phone.mp4", 90)
    info = V.probe(video)
    assert (info.width, info.height, info.rotation) == (32, 64, 90)
    frames = V.read_video(video, backend="pyav")
    assert frames.shape == (6, 64, 32, 3)
    assert frames[0, -12:].mean() > 200 and frames[0, :40].mean() < 30  # the band is at the bottom
    assert np.array_equal(V.read_frames(video, [5, 2], backend="pyav"), frames[[5, 2]])
    upside_down = V.read_video(_sideways_video(tmp_path / "flipped.mp4", 180), backend="pyav")
    assert upside_down.shape == (6, 32, 64, 3) and upside_down[0, :, -12:].mean() > 200
    out = tmp_path / "out"
    prepare_dataset(tmp_path / "videos", out, flow="none", short_side=16, workers=0, progress=False)
    import cv2

    assert cv2.imread(str(out / "phone" / "img_00001.jpg")).shape == (32, 16, 3)
