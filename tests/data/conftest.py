"""Fixtures for the decoding / flow / prepare tests: tiny generated videos and the shared real files."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
SHARED_VIDEOS = SHARED / "videos"


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
    """The folder of real sample videos (``<repo>/../shared/videos``); skips when it is absent."""
    if not (SHARED_VIDEOS / "test.avi").is_file():
        pytest.skip(f"shared sample videos not found at {SHARED_VIDEOS}")
    return SHARED_VIDEOS
