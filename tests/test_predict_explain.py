"""What the page shows, from :mod:`stfn.predict`: the sliding windows,
:meth:`Predictor.explain` (the same top-k as ``predict``), the model card and other test crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stfn.config import config_from_dict
from stfn.predict import Predictor, window_starts
from suite_helpers import VIDEOS, save_tiny_checkpoint

TEST_AVI = VIDEOS / "test.avi"
needs_videos = pytest.mark.shared("videos/test.avi")
CLASSES = ["A", "B", "C"]


def config(streams=("rgb", "flow")):
    return config_from_dict({
        "name": "explain-test",
        "model": {"arch": "stfn", "streams": list(streams), "num_classes": 3, "backbone": "cnn_small",
                  "flow_length": 2, "head": {"hidden_dim": 16, "blocks": 1, "dropout": 0.0}},
        "data": {"frames": 4, "scale_size": 36, "crop_size": 32, "test_crops": 1},
        "train": {"amp": "none"},
    })


def test_window_starts() -> None:
    assert window_starts(100, 40, 20) == [0, 20, 40, 60]
    assert window_starts(100, 40, 25) == [0, 25, 50, 60]  # the last window ends at the last frame
    assert window_starts(30, 40, 10) == [0]
    many = window_starts(1000, 10, 1, max_windows=5)
    assert many == [0, 248, 495, 742, 990]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    extra = {"metrics": {"top1": 55.0, "top5": 100.0, "mean_class_acc": 50.0, "loss": 1.0}, "train_videos": ["x"]}
    path = save_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "m.pt", config(), CLASSES, extra)
    return Predictor.from_checkpoint(Path(path), device="cpu", amp="none")


@needs_videos
def test_explain_gives_the_predict_result_and_what_the_network_saw(predictor) -> None:
    plain = predictor.predict(TEST_AVI, top_k=3)
    ex = predictor.explain(TEST_AVI, top_k=3, window=40, stride=40, thumb_height=48)
    assert ex["top"] == plain["top"] and ex["frames"] == plain["frames"] == 164
    assert ex["positions"] == [20, 61, 102, 143]
    assert len(ex["thumbnails"]) == len(ex["flow_images"]) == 4
    assert all(t.shape[0] == 48 and t.shape[2] == 3 and t.dtype == np.uint8 for t in ex["thumbnails"] + ex["flow_images"])
    assert ex["flow_max"] >= 1.0
    w = ex["windows"]
    assert w["window"] == 40 and w["stride"] == 40 and w["starts"] == [0, 40, 80, 120, 124]
    assert len(w["probs"]) == 5 and all(abs(sum(p) - 1) < 1e-4 for p in w["probs"])
    assert ex["timings"]["windows"] > 0 and set(plain["timings"]) < set(ex["timings"])
    whole = predictor.explain(TEST_AVI, window=10_000)["windows"]  # one window over the whole video
    assert whole["starts"] == [0]
    assert whole["probs"][0][plain["top"][0]["index"]] == pytest.approx(plain["top"][0]["prob"], abs=1e-5)


@needs_videos
def test_explain_of_a_flow_only_model_still_shows_frames(tmp_path) -> None:
    path = save_tiny_checkpoint(tmp_path / "flow.pt", config(("flow",)), CLASSES)
    p = Predictor.from_checkpoint(path, device="cpu", amp="none")
    ex = p.explain(TEST_AVI, window=82)
    assert ex["top"] == p.predict(TEST_AVI)["top"] and len(ex["thumbnails"]) == 4 and ex["flow_images"]


def test_model_card_and_other_crops(predictor) -> None:
    card = predictor.card
    assert card["classes"] == CLASSES and card["arch"] == "stfn" and card["backbone"] == "cnn_small"
    assert card["accuracy"] == {"top1": 55.0, "top5": 100.0, "mean_class_acc": 50.0} and card["train_videos"] == 1
    three = predictor.with_crops(3)
    assert three.crops == 3 and three.model is predictor.model and predictor.crops == 1
    assert predictor.with_crops(1) is predictor and three.settings()["crops"] == 3
