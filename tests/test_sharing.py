"""Sharing a model (``stfn.sharing``): the Hub folder's model card and config, as ``stfn export --format hub``
writes them, and ``stfn model-info`` on a folder."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import stfn
from stfn.cli import main
from stfn.sharing import card_markdown, input_spec


@pytest.fixture
def trained_pt(tmp_path):
    torch.manual_seed(0)
    model = stfn.create_model("tsn", num_classes=2, backbone="cnn_small", streams=["rgb", "flow"], flow_length=3)
    return stfn.save_model(model, tmp_path / "m.pt", classes=["pour", "stir"], epoch=7,
                           metrics={"top1": 81.25, "top5": 100.0, "mean_class_acc": 80.0})


def test_the_card_carries_the_hubs_metadata_and_the_recorded_accuracy(tmp_path, trained_pt) -> None:
    assert main(["export", str(trained_pt), "--format", "hub", "--out", str(tmp_path / "hub"), "--repo", "lab/tsn"]) == 0
    text = (tmp_path / "hub" / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "stfn" and meta["pipeline_tag"] == "video-classification"
    assert {"video-classification", "stfn", "two-stream"} <= set(meta["tags"]) and meta["datasets"] == ["synthetic"]
    (result,) = meta["model-index"][0]["results"]
    assert result["metrics"][0] == {"type": "accuracy", "value": 81.25, "name": "top-1"}
    assert result["dataset"]["split"] == "split1"
    assert "top1 81.2%, top5 100.0%, mean class acc 80.0%" in body and "`pour`, `stir`" in body
    assert "stfn predict lab/tsn video.mp4" in body and "3 stacked flow fields" in body
    spec = json.loads((tmp_path / "hub" / "config.json").read_text())["stfn"]["inputs"]
    assert spec["flow"] == {**spec["flow"], "fields": 3, "channels": 6, "order": "x1,y1,x2,y2,..."}
    assert spec["rgb"]["mean"] == pytest.approx([123.675, 116.28, 103.53])


def test_a_card_without_recorded_metrics_says_so(trained_pt) -> None:
    from stfn.engine.checkpoint import checkpoint_config, load_checkpoint

    ckpt = load_checkpoint(trained_pt)
    ckpt["metrics"] = {}
    cfg = checkpoint_config(ckpt, trained_pt)
    text = card_markdown(cfg, ckpt)
    assert "model-index" not in text and "No evaluation was recorded" in text
    assert "flow" in input_spec(cfg, ckpt) and "stfn predict ORG/NAME" in text


def test_model_info_shows_where_a_folder_came_from(tmp_path, trained_pt, capsys) -> None:
    stfn.save_pretrained(trained_pt, tmp_path / "hub")
    capsys.readouterr()
    assert main(["model-info", str(tmp_path / "hub"), "--frames", "2", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tsn: backbone cnn_small, streams rgb+flow, 2 classes")
    assert f"came from: Hub folder {tmp_path / 'hub'}" in out and "accuracy at training time: top1 81.2" in out
    assert main(["model-info", str(trained_pt), "--json", "--frames", "2", "--size", "32"]) == 0
    card = json.loads(capsys.readouterr().out)["card"]
    assert card["source"] == {"format": "stfn"} and card["epoch"] == 7
    assert main(["model-info", str(trained_pt), "--set", "model.arch=stfn"]) == 2
    assert "a CHECKPOINT describes its own" in capsys.readouterr().err
