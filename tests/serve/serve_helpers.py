"""Helpers of the ``stfn serve`` tests (a module, so every test file and the benchmark can import it)."""

from __future__ import annotations

from pathlib import Path

from stfn.config import Config, config_from_dict
from suite_helpers import SHARED

CLASSES = ["Jump", "Run", "Walk", "Wave", "Clap"]
VIDEOS = SHARED / "videos"
CLIPS = SHARED / "realdata" / "clips"


def tiny_config(streams=("rgb", "flow"), name="serve-test") -> Config:
    """A cnn_small STFN on 4 frames of 32 px: a prediction takes a fraction of a second on one core."""
    return config_from_dict({
        "name": name,
        "model": {"arch": "stfn", "streams": list(streams), "num_classes": len(CLASSES), "backbone": "cnn_small",
                  "flow_length": 2, "head": {"hidden_dim": 16, "blocks": 1, "dropout": 0.0}},
        "data": {"frames": 4, "scale_size": 36, "crop_size": 32, "test_crops": 1},
        "train": {"amp": "none"},
    })


def upload(client, video: Path | None = None, data: bytes | None = None, name: str | None = None,
           route: str = "/v1/predict", **fields):
    """POST one file (a path, or raw bytes) with text fields through a test client; returns the response."""
    body = video.read_bytes() if video is not None else data
    files = {"file": (name or (video.name if video else "upload.bin"), body, "application/octet-stream")}
    return client.post(route, files=files, data={k: str(v) for k, v in fields.items()})
