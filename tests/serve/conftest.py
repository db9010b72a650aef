"""Fixtures of the ``stfn serve`` tests: tiny random-weight checkpoints and an app on them (helpers in
serve_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'stfn[serve]')")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import CLASSES, tiny_config  # noqa: E402

from stfn.serve.app import create_app  # noqa: E402
from stfn.serve.models import load_models  # noqa: E402
from suite_helpers import save_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("serve-ckpt")
    extra = {"metrics": {"top1": 61.5, "top5": 90.0, "mean_class_acc": 60.2},
             "dataset": {"dataset": "synthetic", "split": 1, "num_classes": 5}, "train_videos": ["a", "b", "c"]}
    return {
        "two_stream": save_tiny_checkpoint(folder / "two_stream.pt", tiny_config(), CLASSES, extra),
        "rgb": save_tiny_checkpoint(folder / "rgb.pt", tiny_config(("rgb",), "rgb-test"), CLASSES),
    }


@pytest.fixture(scope="session")
def models(checkpoints):
    return load_models([checkpoints["two_stream"], checkpoints["rgb"]], device="cpu", amp="none")


@pytest.fixture()
def client(models):
    app = create_app(models, workers=1, queue=2, max_upload_mb=2.0)
    with TestClient(app) as c:
        yield c
