"""Helpers of the ``stfn serve`` tests (a module, so every test file and the benchmark can import it)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from stfn.config import Config, config_from_dict
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
    import os
    import subprocess
    import sys
    import urllib.request

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
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
