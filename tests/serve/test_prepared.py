"""The prepared-set browser (``stfn serve --prepared DIR``) on a small prepared folder with one good
video, one failed one and one whose flow export is broken."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import write_prepared

from stfn.errors import StfnError
from stfn.serve.app import create_app
from stfn.serve.prepared import NotFound, PreparedSet


@pytest.fixture()
def prepared(tmp_path: Path) -> Path:
    return write_prepared(tmp_path)


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


@pytest.mark.parametrize("key", ["..", "../prepared", "Run/../../../etc/passwd", "%2e%2e/%2e%2e/etc", "%2e%2e",
                                 "..%2f..%2fetc", "Run/good/../../..", "/etc", "Run/good\0"])
def test_prepared_urls_with_dotdot_or_encoded_dots_are_404(prepared: Path, key: str) -> None:
    """Only manifest keys are read: ``..``, ``%2e%2e`` (sent encoded once or twice) and the like name
    no video (issue 28)."""
    with TestClient(create_app({}, prepared=prepared)) as client:
        for route in ("video", "frame", "flow"):
            r = client.get(f"/v1/prepared/{route}", params={"key": key, "index": 0})
            assert r.status_code == 404 and "no video" in r.json()["detail"], r.text
        raw = client.get("/v1/prepared/frame?key=Run%2F%2e%2e%2F%2e%2e%2Fmanifest.json&index=0")
        assert raw.status_code == 404
        for path in ("/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/%2e%2e%2f%2e%2e%2fpyproject.toml"):
            assert client.get(path).status_code == 404, path
        assert client.get("/v1/prepared/frame", params={"key": "Run/good", "index": 0}).status_code == 200


def test_symlinks_out_of_the_prepared_folder_are_not_followed(prepared: Path, tmp_path: Path) -> None:
    """A video folder, or one frame or flow file, that is a symlink to a file outside DIR is refused
    (404, one sentence); a symlink that stays inside DIR is read (issue 28)."""
    import json

    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "img_00001.jpg").write_bytes(b"SECRET")
    (secret / "flow_x_00001.jpg").write_bytes(b"SECRET")
    good = prepared / "Run" / "good"
    (good / "img_00002.jpg").unlink()
    (good / "img_00002.jpg").symlink_to(secret / "img_00001.jpg")  # one frame file points out
    (good / "flow_x_00002.jpg").unlink()
    (good / "flow_x_00002.jpg").symlink_to(secret / "flow_x_00001.jpg")
    (good / "img_00003.jpg").unlink()
    (good / "img_00003.jpg").symlink_to(good / "img_00001.jpg")  # inside: fine
    (prepared / "Walk").mkdir()
    (prepared / "Walk" / "out").symlink_to(secret, target_is_directory=True)  # a whole folder points out
    manifest = json.loads((prepared / "manifest.json").read_text())
    manifest["videos"]["Walk/out"] = {**manifest["videos"]["Run/good"], "source": "Walk/out.avi", "frames": 1}
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app({}, prepared=prepared)) as client:
        for route, key, index in [("frame", "Run/good", 1), ("flow", "Run/good", 1), ("frame", "Walk/out", 0),
                                  ("video", "Walk/out", 0)]:
            r = client.get(f"/v1/prepared/{route}", params={"key": key, "index": index})
            assert r.status_code == 404 and "outside the prepared folder" in r.json()["detail"], (route, key, r.text)
            assert b"SECRET" not in r.content
        inside = client.get("/v1/prepared/frame", params={"key": "Run/good", "index": 2})
        assert inside.status_code == 200 and inside.content == (good / "img_00001.jpg").read_bytes()


def test_a_packed_folder_is_browsed_like_its_rawframes(prepared: Path, tmp_path: Path) -> None:
    from stfn.data.prepare.convert import repack

    s = repack(prepared, tmp_path / "packed", "packed", progress=False)
    assert [k for k, _ in s.failures] == ["Jump/broken"]  # its flow field 2 is missing: recorded as failed
    raw, packed = PreparedSet(prepared), PreparedSet(tmp_path / "packed")
    assert packed.summary()["format"] == "packed" and raw.summary()["format"] == "rawframes"
    good = packed.video("Run/good")
    assert good["files"] == {"frames": 6, "flow_x": 5, "flow_y": 5} and good["problems"] == []
    assert packed.frame_jpeg("Run/good", 5) == raw.frame_jpeg("Run/good", 5)
    assert packed.flow_jpeg("Run/good", 4) == raw.flow_jpeg("Run/good", 4)
    pack = tmp_path / "packed" / "Run" / "good.stfnpack"
    pack.write_bytes(pack.read_bytes()[:-3])  # a copy cut short
    assert "is truncated or damaged" in packed.video("Run/good")["problems"][0]
    with pytest.raises(NotFound, match="good.stfnpack' is truncated"):
        packed.frame_jpeg("Run/good", 0)
    with pytest.raises(NotFound, match="no video"):
        packed.video("../prepared")
