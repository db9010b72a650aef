"""The prepared-set browser (``stfn serve --prepared DIR``) on a small prepared folder with one good
video, one failed one and one whose flow export is broken."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from stfn.data.video.flow import quantize_flow
from stfn.errors import StfnError
from stfn.serve.app import create_app
from stfn.serve.prepared import NotFound, PreparedSet


def write_video(root: Path, key: str, frames: int, skip_flow: int | None = None) -> None:
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


@pytest.fixture()
def prepared(tmp_path: Path) -> Path:
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


def test_summary_video_and_images(prepared: Path) -> None:
    ps = PreparedSet(prepared)
    summary = ps.summary()
    assert summary["counts"] == {"ok": 2, "failed": 1} and summary["root"] == "prepared"
    bad = next(v for v in summary["videos"] if v["key"] == "Walk/bad")
    assert bad["status"] == "failed" and "could not be decoded" in bad["error"]
    good = ps.video("Run/good")
    assert good["files"] == {"frames": 6, "flow_x": 5, "flow_y": 5} and good["problems"] == []
    assert good["positions"] == [0, 1, 2, 3, 4, 5] and good["flow_positions"] == [0, 1, 2, 3, 4, 4]
    broken = ps.video("Jump/broken")
    assert broken["problems"] == ["3 flow_x files on disk, the manifest says 4", "3 flow_y files on disk, the manifest says 4"]
    frame = cv2.imdecode(np.frombuffer(ps.frame_jpeg("Run/good", 5), np.uint8), cv2.IMREAD_COLOR)
    assert frame.shape == (24, 32, 3) and abs(int(frame.mean()) - 100) <= 3
    flow = cv2.imdecode(np.frombuffer(ps.flow_jpeg("Run/good", 0), np.uint8), cv2.IMREAD_COLOR)  # BGR
    b, g, r = (float(flow[..., c].mean()) for c in range(3))
    assert r > 200 and g < 40 and b < 40  # uniform motion to the right: red at full brightness
    with pytest.raises(NotFound, match="flow_x_00003.jpg' is missing"):
        ps.flow_jpeg("Jump/broken", 2)


@pytest.mark.parametrize("key", ["../prepared", "Run/../../etc", "/etc/passwd", "Run"])
def test_only_manifest_keys_are_read(prepared: Path, key: str) -> None:
    with pytest.raises(NotFound, match="no video"):
        PreparedSet(prepared).video(key)


def test_missing_folder_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(StfnError, match="does not exist"):
        PreparedSet(tmp_path / "nope")


def test_prepared_routes(prepared: Path) -> None:
    app = create_app({}, prepared=prepared)
    with TestClient(app) as client:
        assert client.get("/", follow_redirects=False).headers["location"] == "/prepared"
        assert "prepared.js" in client.get("/prepared").text
        assert client.get("/v1/prepared").json()["counts"] == {"ok": 2, "failed": 1}
        assert client.get("/v1/prepared/video", params={"key": "Run/good"}).json()["frames"] == 6
        img = client.get("/v1/prepared/frame", params={"key": "Run/good", "index": 0})
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        assert client.get("/v1/prepared/flow", params={"key": "Run/good", "index": 1}).status_code == 200
        missing = client.get("/v1/prepared/flow", params={"key": "Jump/broken", "index": 2})
        assert missing.status_code == 404 and "missing" in missing.json()["detail"]
        assert client.get("/v1/prepared/frame", params={"key": "../../etc", "index": 0}).status_code == 404
        assert client.get("/v1/prepared/frame", params={"key": "Run/good", "index": 99}).status_code == 404
        no_model = client.post("/v1/predict", files={"file": ("a.mp4", b"123")})
        assert no_model.status_code == 404 and "no model" in no_model.json()["detail"]
