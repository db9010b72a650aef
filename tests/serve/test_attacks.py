"""Issue 28: hostile uploads and parameters against the ``stfn serve`` API (through FastAPI's test
client; the attacks that need a real server on a loopback port are in test_attacks_live.py).

Each answer must be a JSON ``{"detail": "one sentence"}`` with a 4xx status, never a 500 or a
library's traceback, never a server path; the request's temporary folder must be gone afterwards and
a good request must still be answered correctly."""

from __future__ import annotations

import asyncio
import os

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import CLASSES, VIDEOS, upload, write_prepared
from starlette.requests import Request

from stfn.serve.app import create_app
from stfn.serve.uploads import UploadError, receive_upload

needs_videos = pytest.mark.shared("videos/test.avi", "videos/demo.mp4", "videos/corrupted.mp4")


def one_sentence(r, status: int, *words: str) -> str:
    """Assert ``r`` is ``status`` with a one-line JSON detail holding ``words`` and no server path."""
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, detail
    assert "/tmp" not in detail and "stfn-serve-" not in detail and "upload-" not in detail, detail
    for w in words:
        assert w in detail, (w, detail)
    return detail


def nothing_left(client: TestClient) -> None:
    state = client.app.state.stfn
    assert not list(state.upload_root.iterdir()) and state.pool.status()["held"] == 0


def good_answer(client: TestClient) -> None:
    """A real video still gets a full, correct answer."""
    r = upload(client, VIDEOS / "test.avi", top_k=3)
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert res["ok"] and res["video"] == "test.avi" and res["frames"] == 164 and len(res["top"]) == 3
    assert all(t["class"] in CLASSES for t in res["top"]) and abs(sum(t["prob"] for t in res["top"])) <= 1.0001


def raw_post(client: TestClient, body: bytes, boundary: str | None = "xx", route: str = "/v1/predict"):
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"} if boundary else {}
    return client.post(route, content=body, headers=headers)


def png_bytes() -> bytes:
    return cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8))[1].tobytes()


@needs_videos
@pytest.mark.parametrize(("name", "make", "words"), [
    ("notes.txt", lambda: b"just some text, not a video\n" * 40, ("notes.txt", "not a readable video")),
    ("random.mp4", lambda: np.random.default_rng(1).bytes(50_000), ("random.mp4", "not a readable video")),
    ("picture.png", png_bytes, ("picture.png", "single frame", "not a video")),
    ("picture.mp4", png_bytes, ("picture.mp4", "single frame")),  # a lying extension changes nothing
    ("photo.jpg", lambda: cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes(), ("single frame",)),
    ("empty.mp4", lambda: b"", ("the uploaded file 'empty.mp4' is empty",)),
    ("one_byte.mp4", lambda: b"\0", ("one_byte.mp4",)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_uploads_that_are_not_videos_are_one_sentence(client, name, make, words) -> None:
    one_sentence(upload(client, data=make(), name=name), 422, *words)
    nothing_left(client)
    good_answer(client)


@needs_videos
@pytest.mark.parametrize("route", ["/v1/predict", "/v1/explain"])
def test_truncated_and_corrupt_mp4s_are_one_sentence(client, route, tmp_path) -> None:
    """demo.mp4 cut at 0.1 % to 99 % of its length (its index is at the end), the broken MP4 of
    ../shared, and demo.mp4 with its middle overwritten by noise."""
    demo = (VIDEOS / "demo.mp4").read_bytes()
    garbled = bytearray(demo)
    garbled[1000:60_000] = np.random.default_rng(2).bytes(59_000)
    bodies = {f"cut_{f}.mp4": demo[: int(len(demo) * f)] for f in (0.001, 0.05, 0.5, 0.9, 0.99)}
    bodies |= {"corrupted.mp4": (VIDEOS / "corrupted.mp4").read_bytes(), "garbled.mp4": bytes(garbled)}
    for name, body in bodies.items():
        one_sentence(upload(client, data=body, name=name, route=route), 422, name)
    nothing_left(client)
    good_answer(client)


@needs_videos
def test_a_truncated_avi_is_one_sentence_saying_so(client) -> None:
    """An AVI cut short decodes up to the cut, fewer frames than its header announces: refused as
    truncated (as ``stfn predict`` refuses it), naming the counts."""
    avi = (VIDEOS / "test.avi").read_bytes()
    for f in (0.3, 0.7, 0.95):
        one_sentence(upload(client, data=avi[: int(len(avi) * f)], name=f"cut_{f}.avi"), 422, f"cut_{f}.avi",
                     "is truncated", "announces 164 frames")
    one_sentence(upload(client, data=avi[:2000], name="head.avi"), 422, "head.avi")
    nothing_left(client)
    good_answer(client)


@needs_videos
@pytest.mark.parametrize(("sent", "shown"), [
    ("../../../../etc/passwd", "passwd"), ("..\\..\\windows\\win.ini", "win.ini"), ("..", ".."),
    ("/abs/path/clip.avi", "clip.avi"), ("видео 動画 🎬.avi", "видео 動画 🎬.avi"),
    ("esc\x1b[31mred\x07.avi", "esc[31mred.avi"), ("rtl\u202egnp.avi", "rtlgnp.avi"),
    ("x" * 3000 + ".avi", "x" * 200),
], ids=["dotdot", "backslash", "bare_dotdot", "absolute", "unicode", "escape", "rtl_override", "long"])
def test_file_names_label_the_answer_and_never_name_a_path(client, sent, shown) -> None:
    """The raw UTF-8 bytes of the name in the part's header (as a browser sends them); only the last
    component, printable characters only, at most 200, labels the answer; the file is always
    ``<request folder>/video<ext>``."""
    disposition = f'Content-Disposition: form-data; name="file"; filename="{sent}"'.encode()
    body = b"--xx\r\n" + disposition + b"\r\n\r\n" + (VIDEOS / "test.avi").read_bytes() + b"\r\n--xx--\r\n"
    r = raw_post(client, body)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["video"] == shown
    nothing_left(client)
    assert not os.path.exists("/etc/passwd.stfn") and not list(client.app.state.stfn.upload_root.parent.glob("passwd"))


@needs_videos
def test_malformed_multipart_bodies_are_one_sentence(client) -> None:
    video = (VIDEOS / "test.avi").read_bytes()
    part = b'--xx\r\nContent-Disposition: form-data; name="%s"; filename="test.avi"\r\n\r\n'
    one_sentence(raw_post(client, part % b"video" + video + b"\r\n--xx--\r\n"), 422, "unknown form field 'video'",
                 "expected: file")
    one_sentence(raw_post(client, part % b"file" + video + b"\r\n--xx--\r\n", boundary=None), 422,
                 "multipart/form-data", "'file' field")
    one_sentence(raw_post(client, b"--yy\r\n" + video[:100], boundary="xx"), 422, "not valid multipart")
    one_sentence(raw_post(client, b"", boundary="xx"), 422)
    one_sentence(raw_post(client, b'--xx\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n3\r\n--xx--\r\n'),
                 422, "no video in the request")
    two = part % b"file" + video[:100] + b"\r\n" + part % b"file" + video[:100] + b"\r\n--xx--\r\n"
    one_sentence(raw_post(client, two), 422, "one video per request")
    no_disposition = b"--xx\r\nContent-Type: video/avi\r\n\r\n" + video + b"\r\n--xx--\r\n"
    one_sentence(raw_post(client, no_disposition), 422, "unknown form field ''")
    one_sentence(client.post("/v1/predict", content=video, headers={"content-type": "video/x-msvideo"}), 422,
                 "multipart/form-data")
    # a part with no Content-Type of its own is fine: it is the bytes that count
    ok = raw_post(client, part % b"file" + video + b"\r\n--xx--\r\n")
    assert ok.status_code == 200 and ok.json()["results"][0]["frames"] == 164
    nothing_left(client)


@needs_videos
@pytest.mark.parametrize(("fields", "status", "words"), [
    ({"model": "/etc/passwd"}, 404, "unknown model '/etc/passwd'"),
    ({"model": "../two_stream"}, 404, "unknown model '../two_stream'"),
    ({"model": str(VIDEOS / "test.avi")}, 404, "unknown model"),
    ({"path": "/etc/passwd"}, 422, "unknown form field 'path'"),
    ({"checkpoint": "/tmp/x.pt"}, 422, "unknown form field 'checkpoint'"),
    ({"source": "/etc/hosts"}, 422, "unknown form field 'source'"),
    ({"top_k": "../../1"}, 422, "'top_k' must be a whole number"),
    ({"crops": "/dev/zero"}, 422, "'crops' must be a whole number"),
    ({"top_k": "9" * 2000}, 422, "longer than 1024 bytes"),
])
def test_no_parameter_names_a_path_on_the_server(client, fields, status, words) -> None:
    one_sentence(upload(client, VIDEOS / "test.avi", **fields), status, words)
    nothing_left(client)


@needs_videos
def test_query_parameters_cannot_name_a_file_either(client) -> None:
    """Query strings are not read by the upload routes: the answer is about the uploaded video."""
    video = (VIDEOS / "test.avi").read_bytes()
    r = client.post("/v1/predict?file=/etc/passwd&model=/etc/passwd&path=../../x",
                    files={"file": ("test.avi", video, "video/x-msvideo")})
    assert r.status_code == 200 and r.json()["results"][0]["video"] == "test.avi" and r.json()["checkpoint"] == "two_stream"
    one_sentence(client.get("/v1/prepared/frame", params={"key": "/etc/passwd", "index": 0}), 404, "no prepared data set")
    nothing_left(client)


def test_a_bad_query_parameter_is_one_sentence_not_a_list(models, tmp_path) -> None:
    with TestClient(create_app(models, prepared=write_prepared(tmp_path))) as client:
        one_sentence(client.get("/v1/prepared/frame", params={"key": "Run/good", "index": "abc"}), 422,
                     "query parameter 'index' must be a whole number, got 'abc'")
        one_sentence(client.get("/v1/prepared/frame", params={"key": "Run/good"}), 422,
                     "query parameter 'index' is missing")
        one_sentence(client.get("/v1/prepared/video"), 422, "query parameter 'key' is missing")
        one_sentence(client.get("/v1/prepared/frame", params={"key": "Run/good", "index": "1" * 400}), 404,
                     "'Run/good' has no frame 1111", "the manifest lists 6")  # was an OSError: name too long
        one_sentence(client.get("/v1/prepared/flow", params={"key": "Run/good", "index": -1}), 404, "has no flow -1")


def _receive(chunks: list[bytes], read: list[int]):
    async def receive() -> dict:
        read.append(1)
        i = len(read) - 1
        return {"type": "http.request", "body": chunks[i] if i < len(chunks) else b"", "more_body": i < len(chunks) - 1}
    return receive


def _scope() -> dict:
    return {"type": "http", "method": "POST", "path": "/v1/predict",
            "headers": [(b"content-type", b"multipart/form-data; boundary=bb")]}


def test_a_body_of_endless_text_fields_or_trailing_bytes_is_not_read_without_end(tmp_path) -> None:
    """The file part's limit does not bound the rest of a body: a stream of text fields (each under
    the 1 KB field limit), or bytes after the closing boundary, used to be read to their end."""
    field = b'--bb\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n' + b"1" * 1000 + b"\r\n"
    read: list[int] = []
    with pytest.raises(UploadError) as e:
        asyncio.run(receive_upload(Request(_scope(), _receive([field] * 5000, read)), tmp_path, max_bytes=100_000,
                                   fields=("top_k",)))
    assert e.value.status == 413 and "request body is larger than the server's limit" in e.value.message
    assert len(read) < 200  # about (100 000 + 64 KB) / 1 KB chunks, of 5000
    read = []
    body = b'--bb\r\nContent-Disposition: form-data; name="file"; filename="a.avi"\r\n\r\nxyz\r\n--bb--\r\n'
    got = asyncio.run(receive_upload(Request(_scope(), _receive([body] + [b"z" * 65536] * 1000, read)),
                                     tmp_path, max_bytes=100_000))
    assert got.size == 3 and got.filename == "a.avi" and len(read) == 1  # the epilogue is never read


@needs_videos
def test_a_part_header_over_4_kb_is_one_sentence(client) -> None:
    name = "y" * 5000 + ".avi"
    body = (f'--xx\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
            + (VIDEOS / "test.avi").read_bytes() + b"\r\n--xx--\r\n")
    one_sentence(raw_post(client, body), 422, "too many or too long headers")
    nothing_left(client)
    good_answer(client)


def test_an_upload_that_drips_is_408_though_it_never_stalls(tmp_path) -> None:
    """10 bytes every 20 ms never trip the idle timeout, yet would hold a pool slot for hours: once
    the grace period is over, an average under the minimum rate is refused."""
    head = b'--bb\r\nContent-Disposition: form-data; name="file"; filename="drip.avi"\r\n\r\n'
    sent: list[int] = []

    async def receive() -> dict:
        sent.append(1)
        await asyncio.sleep(0.02)
        return {"type": "http.request", "body": head if len(sent) == 1 else b"x" * 10, "more_body": len(sent) < 10_000}

    with pytest.raises(UploadError) as e:
        asyncio.run(receive_upload(Request(_scope(), receive), tmp_path, max_bytes=10**6, idle_timeout=1.0,
                                   min_rate=10_240, rate_grace=0.3))
    assert e.value.status == 408 and "the upload is too slow" in e.value.message and "10 KB/s" in e.value.message
    assert 10 < len(sent) < 100  # refused a little after 0.3 s, not after 10 000 chunks
    got = asyncio.run(receive_upload(Request(_scope(), _receive([head + b"y" * 50_000 + b"\r\n--bb--\r\n"], [])),
                                     tmp_path, max_bytes=10**6, min_rate=10_000, rate_grace=0.0))
    assert got.size == 50_000  # a body that arrives at once is never too slow


@needs_videos
@pytest.mark.parametrize("fields", [{"window": 1, "stride": 1}, {"window": 10**12}, {"stride": 10**12},
                                    {"top_k": 10**30, "window": 2, "stride": 1}])
def test_explain_parameters_cannot_ask_for_unbounded_work(client, fields) -> None:
    """Huge or tiny window and stride give at most 12 windows; a huge top_k gives every class once."""
    r = upload(client, VIDEOS / "test.avi", route="/v1/explain", **fields)
    assert r.status_code == 200, r.text
    doc = r.json()
    windows = doc["explain"]["windows"]
    assert 1 <= len(windows["starts"]) <= 12 and len(windows["probs"]) == len(windows["starts"])
    assert 1 <= windows["window"] <= 164 and len(doc["results"][0]["top"]) <= len(CLASSES)
    nothing_left(client)
