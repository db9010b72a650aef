"""The page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
installed by ``.ci/run``) driven by Selenium, against ``stfn serve`` started on a free loopback port
with a tiny random-weight checkpoint. Also: a client that disconnects mid-upload against that server.

Set ``STFN_SERVE_SCREENSHOT=docs/images/serve_page.png`` to keep the screenshot (the README's)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import pytest
from serve_helpers import CLASSES, VIDEOS, running_server

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="Chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoints):
    tmp = tmp_path_factory.mktemp("server")
    with running_server([str(checkpoints["two_stream"]), str(checkpoints["rgb"]), "--threads", "1"], tmp) as url:
        yield url, tmp


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the serve extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,1350", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@needs_browser
@pytest.mark.shared("videos/demo.mp4")
def test_page_upload_shows_top_k_flow_strip_and_timeline(server, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    driver = _browser()
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2)
        assert "two_stream.pt" in driver.find_element(By.ID, "card").text  # the model card of the default model
        top_k = driver.find_element(By.ID, "top-k")
        top_k.clear()
        top_k.send_keys("3")
        driver.find_element(By.ID, "stride").send_keys("70")  # window: the default, a quarter of 280 frames
        driver.find_element(By.ID, "file").send_keys(str((VIDEOS / "demo.mp4").resolve()))
        wait.until(lambda d: "done" in d.find_element(By.ID, "status").text or "error" in
                   d.find_element(By.ID, "status").get_attribute("class"))
        assert "done" in driver.find_element(By.ID, "status").text, driver.find_element(By.ID, "status").text
        items = driver.find_elements(By.CSS_SELECTOR, "#top li")
        assert len(items) == 3 and all(i.find_element(By.CLASS_NAME, "name").text in CLASSES for i in items)
        probs = [float(i.find_element(By.CLASS_NAME, "prob").text) for i in items]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.001
        figures = driver.find_elements(By.CSS_SELECTOR, "#strip figure")
        assert len(figures) == 4  # T = 4 sampled positions
        for fig in figures:
            frame, flow = fig.find_element(By.CLASS_NAME, "frame"), fig.find_element(By.CLASS_NAME, "flow")
            for img in (frame, flow):  # decoded by the browser, not just present
                assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
        assert driver.find_elements(By.CSS_SELECTOR, "#timeline svg polyline.series")
        assert driver.find_element(By.ID, "window-info").text.startswith("4 windows of 70 frames (2.50 s), every 70 frames")
        assert "ms" in driver.find_element(By.ID, "timings").text
        shot = tmp_path / "serve_page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("STFN_SERVE_SCREENSHOT"):
            shutil.copy(shot, os.environ["STFN_SERVE_SCREENSHOT"])
        driver.find_element(By.ID, "file").send_keys(str((VIDEOS / "corrupted.mp4").resolve()))
        wait.until(lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
        status = driver.find_element(By.ID, "status").text
        assert status.startswith("422:") and "corrupted.mp4" in status
    finally:
        driver.quit()


def test_a_client_that_disconnects_mid_upload_leaves_nothing(server) -> None:
    url, tmp = server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        head = (b"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"v.mp4\"\r\n\r\n")
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0\r\n"
                  b"Content-Length: 1000000\r\n\r\n" + head + b"\0" * 50_000)
    with urllib.request.urlopen(url + "/healthz", timeout=10) as r:  # still serving
        health = json.loads(r.read())
    assert health["status"] == "ok"
    for _ in range(50):  # the server notices the disconnect, then removes the request's folder
        left = [p for p in tmp.glob("stfn-serve-*/*")]
        if not left and health["pool"]["held"] == 0:
            break
        import time

        time.sleep(0.1)
        with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
            health = json.loads(r.read())
    assert not left and health["pool"]["held"] == 0
    assert list(tmp.glob("stfn-serve-*"))  # the server's upload folder is where we looked


@needs_browser
@pytest.mark.shared("videos")
def test_prepared_set_page_shows_frames_flow_and_a_broken_export(tmp_path: Path) -> None:
    """``stfn prepare`` on ../shared/videos (corrupted.mp4 fails there), one flow file deleted, then the
    prepared-set page: the failed video's error, frames and flow side by side, the missing file."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from stfn.cli import main

    videos, prepared = tmp_path / "videos", tmp_path / "prepared"
    videos.mkdir()
    for name in ("test.avi", "corrupted.mp4"):
        (videos / name).symlink_to((VIDEOS / name).resolve())
    assert main(["prepare", str(videos), str(prepared), "--short-side", "64", "--workers", "0", "--quiet"]) == 1
    (prepared / "test" / "flow_x_00031.jpg").unlink()  # a broken export: field 30 (0-based) is gone
    with running_server(["--prepared", str(prepared)], tmp_path) as url:
        driver = _browser()
        try:
            driver.get(url + "/")  # no model: the page is the prepared-set browser
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#videos tr")) == 2)
            assert "1 ok, 1 failed" in driver.find_element(By.ID, "title").text
            failed = driver.find_element(By.CSS_SELECTOR, "#videos tr.failed")
            assert "corrupted" in failed.text and "cannot decode" in failed.text
            driver.find_element(By.CSS_SELECTOR, "#videos tr[data-key='test']").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#pairs figure")) == 8)
            problems = driver.find_element(By.ID, "problems").text
            assert "162 flow_x files on disk, the manifest says 163" in problems
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#pairs .problem"))
            missing = driver.find_elements(By.CSS_SELECTOR, "#pairs .problem")
            assert [m.text for m in missing] == ["flow 30: missing or unreadable"]  # positions 10, 30, 51, ... of 164
            images = driver.find_elements(By.CSS_SELECTOR, "#pairs img")
            assert len(images) == 15 and all(
                driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) > 0 for i in images)
        finally:
            driver.quit()
