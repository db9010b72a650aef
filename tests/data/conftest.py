"""Fixtures for the decoding / flow / prepare tests: tiny generated videos, the shared real files, and
checks of a prepared folder."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from stfn.data.prepare.manifest import load_manifest
from stfn.data.prepare.state import STATE_DIR
from suite_helpers import VIDEOS, missing_shared


def video_frames(n: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> np.ndarray:
    """``(n, H, W, 3)`` uint8: a textured patch moving right by 2 px per frame over a smooth texture."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    bg = cv2.resize(rng.integers(0, 256, (h // 6, w // 6, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    patch = rng.integers(0, 256, (h // 8, w // 12, 3), dtype=np.uint8)
    patch = cv2.resize(patch, (w // 3, h // 2), interpolation=cv2.INTER_CUBIC)
    frames = np.repeat(bg[None], n, axis=0)
    for i in range(n):
        x = (2 * i) % (w - patch.shape[1])
        frames[i, h // 4 : h // 4 + patch.shape[0], x : x + patch.shape[1]] = patch
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int = 25, codec: str = "libx264", gop: int = 8) -> Path:
    """Encode RGB ``frames`` with PyAV (H.264 MP4 by default; ``mpeg4`` for AVI), key frame every ``gop``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps, 1))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "ultrafast", "bf": "2", "sc_threshold": "0"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def video_factory(tmp_path: Path) -> Callable[..., Path]:
    """``video_factory(rel, n=24, size=(64, 48), codec="libx264")`` writes ``tmp_path/videos/rel``."""

    def make(rel: str, n: int = 24, size: tuple[int, int] = (64, 48), codec: str = "libx264", seed: int = 0) -> Path:
        return write_video(tmp_path / "videos" / rel, video_frames(n, size, seed), codec=codec)

    return make


@pytest.fixture(scope="session")
def video_shared() -> Path:
    """The folder of real sample videos (``<repo>/../shared/videos``); skips when it is absent (a test
    using it is marked ``shared``, see tests/conftest.py)."""
    reason = missing_shared("videos/test.avi")
    if reason:
        pytest.skip(reason)
    return VIDEOS


def _frame_counts(folder: Path) -> tuple[int, int, int]:
    """Frames, flow-x and flow-y images in a prepared video folder (numbering checked)."""
    names = [p.name for p in folder.iterdir()]
    n = sum(x.startswith("img_") for x in names)
    fx = sum(x.startswith("flow_x_") for x in names)
    fy = sum(x.startswith("flow_y_") for x in names)
    # numbering is contiguous from 1
    assert sorted(x for x in names if x.startswith("img_")) == [f"img_{i:05d}.jpg" for i in range(1, n + 1)]
    assert sorted(x for x in names if x.startswith("flow_x_")) == [f"flow_x_{i:05d}.jpg" for i in range(1, fx + 1)]
    return n, fx, fy


def _check_prepared(out: Path, expected: dict[str, int], failed: set[str], flow: bool = True) -> None:
    """Every video in the manifest exactly once, counts equal files on disk, nothing left over."""
    m = load_manifest(out)
    assert set(m.videos) == set(expected) | failed
    for key, n in expected.items():
        rec = m.videos[key]
        assert rec["status"] == "ok" and rec["error"] is None
        assert (rec["frames"], rec["flows"]) == (n, n - 1 if flow else 0)
        assert _frame_counts(out / key) == (n, n - 1, n - 1) if flow else (n, 0, 0)
    for key in failed:
        assert m.videos[key]["status"] == "failed" and m.videos[key]["error"]
        assert not (out / key).exists()
    assert not list((out / STATE_DIR).glob("tmp*"))
    lines = (out / "rawframes.txt").read_text().splitlines()
    assert lines == [f"{k} {n}" for k, n in sorted(expected.items())]


@pytest.fixture
def frame_counts() -> Callable[[Path], tuple[int, int, int]]:
    """``frame_counts(folder)``: ``(frames, flow-x, flow-y)`` images of a prepared video folder."""
    return _frame_counts


@pytest.fixture
def check_prepared() -> Callable[..., None]:
    """``check_prepared(out, expected {key: frames}, failed {keys})``: a prepared folder is consistent."""
    return _check_prepared
