"""Helpers of the ``stfn serve`` tests (a module, so every test file and the benchmark can import it)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from stfn.config import Config, config_from_dict
from stfn.data.video.flow import quantize_flow
from suite_helpers import REALDATA, VIDEOS  # noqa: F401 (the serve tests import VIDEOS from here)

CLASSES = ["Jump", "Run", "Walk", "Wave", "Clap"]
CLIPS = REALDATA / "clips"
REPO = Path(__file__).resolve().parents[2]


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(args: list[str], tmp: Path, timeout: float = 60.0) -> Iterator[str]:
    """``stfn serve ARGS --port P`` in a subprocess (its temporary files under ``tmp``); yields the base
    URL once ``/healthz`` answers, and stops the server afterwards."""
    with server_process(args, tmp, timeout) as (url, _):
        yield url


@contextlib.contextmanager
def server_process(args: list[str], tmp: Path, timeout: float = 60.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """As :func:`running_server`, yielding the base URL and the server's process (its pid for
    :func:`rss_kb`)."""
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO / "src")}
    log = open(tmp / "server.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "stfn", "serve", *args, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"stfn serve did not start: {(tmp / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def rss_kb(pid: int) -> int:
    """Resident memory of process ``pid`` now, KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def healthz(url: str) -> dict:
    """The server's ``/healthz`` document."""
    with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
        return json.loads(r.read())


def write_video(root: Path, key: str, frames: int, skip_flow: int | None = None) -> None:
    """Frames and uniform flow (5 px to the right) of one prepared video ``root/key``."""
    folder = root / key
    folder.mkdir(parents=True)
    for i in range(frames):
        img = np.full((24, 32, 3), 20 * i, np.uint8)
        cv2.imwrite(str(folder / f"img_{i + 1:05d}.jpg"), img)
    for i in range(frames - 1):
        if i == skip_flow:
            continue
        q = quantize_flow(np.full((24, 32, 2), (5.0, 0.0), np.float32), 20.0)  # 5 px to the right
        cv2.imwrite(str(folder / f"flow_x_{i + 1:05d}.jpg"), q[..., 0])
        cv2.imwrite(str(folder / f"flow_y_{i + 1:05d}.jpg"), q[..., 1])


def write_prepared(tmp_path: Path) -> Path:
    """A prepared folder under ``tmp_path``: ``Run/good`` (6 frames), ``Jump/broken`` (flow field 2
    missing) and ``Walk/bad`` (failed in prepare)."""
    root = tmp_path / "prepared"
    write_video(root, "Run/good", 6)
    write_video(root, "Jump/broken", 5, skip_flow=2)
    record = {"status": "ok", "width": 32, "height": 24, "fps": 25.0, "error": None}
    videos = {"Run/good": {**record, "source": "Run/good.avi", "frames": 6, "flows": 5},
              "Jump/broken": {**record, "source": "Jump/broken.avi", "frames": 5, "flows": 4},
              "Walk/bad": {"source": "Walk/bad.mp4", "status": "failed", "frames": None, "flows": None,
                           "width": None, "height": None, "fps": None, "error": "video 'Walk/bad.mp4' could not be decoded"}}
    (root / "manifest.json").write_text(json.dumps({"version": 1, "flow": {"algorithm": "dis", "bound": 20.0},
                                                    "resize": {"short_side": 24}, "videos": videos}))
    return root
