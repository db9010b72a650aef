"""Make the README's screenshot of the ``stfn serve`` page (not a test): a random-weight cnn_small STFN
(112 px crops, T = 8, L = 5), ``stfn serve`` on a free loopback port, headless Chromium uploading
``../shared/realdata/clips/v_HeadMassage_g02_c05.avi``; the PNG is reduced to 128 colours.

    PYTHONPATH=src python tests/serve/screenshot.py docs/images/serve_page.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from PIL import Image  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from serve_helpers import CLIPS, running_server  # noqa: E402
from test_browser import _browser  # noqa: E402

from stfn.config import config_from_dict  # noqa: E402
from suite_helpers import save_tiny_checkpoint  # noqa: E402

CLASSES = ["Basketball", "Diving", "HeadMassage", "Jump", "PlayingGuitar", "Run", "Walk", "Wave"]


def main(out: str) -> int:
    cfg = config_from_dict({
        "name": "cnn_small-112px (random weights)",
        "model": {"arch": "stfn", "streams": ["rgb", "flow"], "num_classes": len(CLASSES), "backbone": "cnn_small",
                  "flow_length": 5, "head": {"hidden_dim": 32, "blocks": 1, "dropout": 0.0}},
        "data": {"frames": 8, "scale_size": 128, "crop_size": 112, "test_crops": 1}, "train": {"amp": "none"}})
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ckpt = save_tiny_checkpoint(tmp / "stfn_cnn_small_112.pt", cfg, CLASSES)
        with running_server([str(ckpt), "--threads", "2"], tmp) as url:
            driver = _browser()
            try:
                driver.set_window_size(1100, 1500)
                driver.get(url + "/")
                wait = WebDriverWait(driver, 120)
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
                driver.find_element(By.ID, "file").send_keys(str((CLIPS / "v_HeadMassage_g02_c05.avi").resolve()))
                wait.until(lambda d: "done" in d.find_element(By.ID, "status").text)
                driver.save_screenshot(str(tmp / "page.png"))
            finally:
                driver.quit()
        image = Image.open(tmp / "page.png").convert("RGB")
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"{out}: {Path(out).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/images/serve_page.png"))
