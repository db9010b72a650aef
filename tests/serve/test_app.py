"""The HTTP API of ``stfn serve`` through FastAPI's test client, on the real videos in ../shared."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from serve_helpers import CLASSES, CLIPS, VIDEOS, upload
from starlette.requests import ClientDisconnect, Request

from stfn.cli import main
from stfn.errors import StfnError
from stfn.serve.app import create_app
from stfn.serve.uploads import UploadError, receive_upload

needs_videos = pytest.mark.shared("videos/test.avi", "videos/demo.mp4", "videos/corrupted.mp4")


def uploads_left(client: TestClient) -> list:
    return list(client.app.state.stfn.upload_root.iterdir())


def test_healthz_and_models(client, checkpoints) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["models"] == ["two_stream", "rgb"]
    assert health["pool"]["workers"] == 1 and health["pool"]["queue"] == 2 and health["max_upload_mb"] == 2.0
    models = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["two_stream", "rgb"]
    first = models[0]
    assert first["checkpoint"] == "two_stream.pt"  # the file name only: no server path
    card = first["card"]
    assert card["classes"] == CLASSES and card["arch"] == "stfn" and card["streams"] == ["rgb", "flow"]
    assert card["dataset"] == "synthetic" and card["split"] == 1 and card["train_videos"] == 3
    assert card["accuracy"] == {"top1": 61.5, "top5": 90.0, "mean_class_acc": 60.2}
    assert models[1]["card"]["accuracy"] is None and models[1]["card"]["streams"] == ["rgb"]
    assert first["settings"]["frames"] == 4 and first["settings"]["crops"] == 1
    assert str(checkpoints["two_stream"].parent) not in json.dumps(models)


@needs_videos
def test_predict_matches_stfn_predict_json(client, checkpoints, capsys) -> None:
    r = upload(client, VIDEOS / "test.avi", top_k=3)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert main(["predict", str(checkpoints["two_stream"]), str(VIDEOS / "test.avi"), "--json", "--top-k", "3",
                 "--device", "cpu", "--amp", "none"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert set(doc) == set(cli) and doc["failed"] == 0 and doc["checkpoint"] == "two_stream"
    assert doc["settings"] == cli["settings"]
    (res,), (ref,) = doc["results"], cli["results"]
    assert res["video"] == "test.avi" and set(res) == set(ref)
    assert [t["class"] for t in res["top"]] == [t["class"] for t in ref["top"]]
    assert [t["prob"] for t in res["top"]] == pytest.approx([t["prob"] for t in ref["top"]], abs=1e-6)
    assert res["frames"] == ref["frames"] == 164
    assert not uploads_left(client)


@needs_videos
@pytest.mark.parametrize("path", [VIDEOS / "demo.mp4", VIDEOS / "flipping_a_pancake.mkv",
                                  CLIPS / "v_HeadMassage_g02_c05.avi", CLIPS / "DefensivePistolShootingTechniques_shoot_gun_f_nm_np1_fr_med_3.mp4"], ids=lambda p: p.name[:12])
def test_predict_real_videos_with_options(client, path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    r = upload(client, path, model="rgb", top_k=2, crops=3)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["checkpoint"] == "rgb" and doc["settings"]["crops"] == 3 and doc["settings"]["streams"] == ["rgb"]
    (res,) = doc["results"]
    assert res["ok"] and len(res["top"]) == 2 and res["top"][0]["class"] in CLASSES
    assert res["top"][0]["prob"] >= res["top"][1]["prob"]
    assert not uploads_left(client)


@needs_videos
def test_bad_uploads_are_json_errors_and_the_server_keeps_serving(client) -> None:
    corrupt = upload(client, VIDEOS / "corrupted.mp4")
    assert corrupt.status_code == 422 and "corrupted.mp4" in corrupt.json()["detail"]
    assert client.app.state.stfn.upload_root.name not in corrupt.text  # no server path in the message
    text = upload(client, data=b"just some text, not a video\n" * 20, name="notes.txt")
    assert text.status_code == 422 and "notes.txt" in text.json()["detail"]
    empty = upload(client, data=b"", name="empty.mp4")
    assert empty.status_code == 422 and empty.json()["detail"] == "the uploaded file 'empty.mp4' is empty"
    unknown = upload(client, VIDEOS / "test.avi", model="nope")
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["detail"]
    assert "two_stream, rgb" in unknown.json()["detail"]
    for field, value, words in [("top_k", "abc", "whole number"), ("top_k", "0", "at least 1"),
                                ("crops", "5", "one of 1, 3, 10")]:
        r = upload(client, VIDEOS / "test.avi", **{field: value})
        assert r.status_code == 422 and field in r.json()["detail"] and words in r.json()["detail"]
    extra = upload(client, VIDEOS / "test.avi", **{"path": "/etc/passwd"})
    assert extra.status_code == 422 and "unknown form field 'path'" in extra.json()["detail"]
    no_file = client.post("/v1/predict", data={"model": "rgb"}, files={"other": ("x", b"1")})
    assert no_file.status_code == 422
    not_multipart = client.post("/v1/predict", content=b"raw", headers={"content-type": "application/octet-stream"})
    assert not_multipart.status_code == 422 and "multipart/form-data" in not_multipart.json()["detail"]
    assert upload(client, VIDEOS / "test.avi").status_code == 200  # still serving
    assert not uploads_left(client)


@needs_videos
def test_oversized_upload_is_413_checked_while_streaming(models) -> None:
    app = create_app(models, max_upload_mb=0.1)
    with TestClient(app) as client:
        big = upload(client, VIDEOS / "test.avi")  # 294 KB > 0.1 MB, refused from Content-Length
        assert big.status_code == 413 and "(0.3 MB) is larger than the server's limit of 0.1 MB" in big.json()["detail"]
        assert not list(app.state.stfn.upload_root.iterdir())


def test_upload_limit_stops_a_stream_without_content_length(tmp_path) -> None:
    """A chunked body (no Content-Length) is refused as soon as the file passes the limit, not after."""
    head = (b"--bb\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.avi\"\r\n\r\n")
    chunks = [head] + [b"\0" * 16384] * 64 + [b"\r\n--bb--\r\n"]
    read = []

    async def receive():
        read.append(1)
        return {"type": "http.request", "body": chunks[len(read) - 1], "more_body": len(read) < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/v1/predict",
             "headers": [(b"content-type", b"multipart/form-data; boundary=bb")]}
    with pytest.raises(UploadError) as e:
        asyncio.run(receive_upload(Request(scope, receive), tmp_path, max_bytes=100_000))
    assert e.value.status == 413 and "limit of 0.1 MB" in e.value.message
    assert len(read) == 8  # 7 chunks of 16 KB pass 100 000 bytes: the other 58 were never read


@needs_videos
def test_full_queue_is_503_with_retry_after(models) -> None:
    app = create_app(models, workers=1, queue=1)
    pool = app.state.stfn.pool
    with TestClient(app) as client:
        pool.acquire()
        pool.acquire()  # every place taken
        r = upload(client, VIDEOS / "test.avi")
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert "busy" in r.json()["detail"] and pool.status()["refused"] == 1
        pool.release()
        assert upload(client, VIDEOS / "test.avi").status_code == 200
        pool.release()
        assert pool.status()["held"] == 0


@needs_videos
def test_explain_for_the_page(client) -> None:
    r = upload(client, VIDEOS / "demo.mp4", route="/v1/explain", top_k=3, window=70, stride=35)
    assert r.status_code == 200, r.text
    doc = r.json()
    res, ex = doc["results"][0], doc["explain"]
    assert len(res["top"]) == 3 and res["video"] == "demo.mp4" and res["timings"]["windows"] > 0
    assert ex["positions"] == [35, 105, 175, 245] and len(ex["thumbnails"]) == len(ex["flow_images"]) == 4
    assert all(u.startswith("data:image/jpeg;base64,") for u in ex["thumbnails"] + ex["flow_images"])
    w = ex["windows"]
    assert w["window"] == 70 and w["stride"] == 35 and w["starts"] == [0, 35, 70, 105, 140, 175, 210]
    assert len(w["probs"]) == 7 and all(len(p) == len(CLASSES) and abs(sum(p) - 1) < 1e-3 for p in w["probs"])
    assert w["window_seconds"] == pytest.approx(70 / res["fps"])
    assert ex["classes"] == CLASSES and doc["card"]["arch"] == "stfn"
    rgb_only = upload(client, VIDEOS / "test.avi", route="/v1/explain", model="rgb")
    assert rgb_only.status_code == 200 and rgb_only.json()["explain"]["flow_images"] is None


def test_page_and_static_files_are_served(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[0]
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and len(r.text) > 500 and "https://" not in r.text  # no CDN
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/docs").status_code == 200
    assert client.get("/prepared").status_code == 404  # no --prepared


def test_create_app_refuses_bad_settings(models) -> None:
    with pytest.raises(StfnError, match="at least one checkpoint"):
        create_app({})
    with pytest.raises(StfnError, match="--max-upload-mb"):
        create_app(models, max_upload_mb=0)
    with pytest.raises(StfnError, match="--workers"):
        create_app(models, workers=0)


def test_client_disconnect_mid_upload_cleans_up(client) -> None:
    """An upload whose client goes away: the handler returns and the request's folder is removed."""
    from stfn.serve.app import _predict

    boundary = b"b0"
    messages = [{"type": "http.request", "body": b"--b0\r\nContent-Disposition: form-data; name=\"file\"; "
                 b"filename=\"v.mp4\"\r\n\r\n" + b"x" * 1000, "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)


    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "app": client.app,
             "headers": [(b"content-type", b"multipart/form-data; boundary=" + boundary)]}
    with pytest.raises(ClientDisconnect):
        asyncio.run(_predict(Request(scope, receive), explain=False))
    assert not uploads_left(client) and client.app.state.stfn.pool.status()["held"] == 0


@needs_videos
def test_fields_after_the_file_as_curl_sends_them(client) -> None:
    """curl -F file=@test.avi -F top_k=2: the file part comes first; its name still labels the answer."""
    video = (VIDEOS / "test.avi").read_bytes()
    body = (b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"dir/test.avi\"\r\n"
            b"Content-Type: video/x-msvideo\r\n\r\n" + video +
            b"\r\n--xx\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n2\r\n--xx--\r\n")
    r = client.post("/v1/predict", content=body, headers={"content-type": "multipart/form-data; boundary=xx"})
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert res["video"] == "test.avi" and len(res["top"]) == 2  # only the last path component is kept
    cut = client.post("/v1/predict", content=body[:5000], headers={"content-type": "multipart/form-data; boundary=xx"})
    assert cut.status_code == 422 and "cut short" in cut.json()["detail"]
    assert not uploads_left(client)


def test_a_stalled_upload_is_408_and_frees_its_slot(tmp_path) -> None:
    async def receive():
        await asyncio.sleep(5)
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v1/predict",
             "headers": [(b"content-type", b"multipart/form-data; boundary=bb")]}
    with pytest.raises(UploadError) as e:
        asyncio.run(receive_upload(Request(scope, receive), tmp_path, max_bytes=1000, idle_timeout=0.05))
    assert e.value.status == 408 and "stalled" in e.value.message
