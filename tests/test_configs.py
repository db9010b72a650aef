"""Every YAML preset in ``configs/`` loads, builds its network and runs a forward pass on tiny inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stfn.config import load_config
from stfn.models import build_model
from stfn.models.info import example_batch

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_presets_exist():
    names = {p.stem for p in CONFIGS}
    expected = {"tiny", "stfn_resnet18", "stfn_resnet50", "tsn_resnet18", "tsn_resnet50", "temporal_inception_resnet50",
                "ucf101_stfn_resnet50", "hmdb51_stfn_resnet50", "ucf101_tsn_rgb_resnet50", "ucf101_tsn_flow_resnet50",
                "ts_lstm_resnet50", "tle_resnet50", "st_resnet50"}  # every baseline has its recipe
    assert expected <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_preset_builds_and_runs(path):
    text = path.read_text()
    assert text.lstrip().startswith("#"), f"{path.name} starts with a comment that says what it is"
    cfg = load_config(path, ["model.pretrained=false"])  # no downloads in tests
    assert cfg.name == path.stem
    model = build_model(cfg.model).eval()
    batch = example_batch(model, frames=2, size=32)
    for v in batch.values():
        v.normal_()
    with torch.no_grad():
        out = model(batch)
    assert out.shape == (1, cfg.model.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem.startswith(("ucf101", "hmdb51"))],
                         ids=lambda p: p.stem)
def test_dataset_recipes(path):
    cfg = load_config(path)
    dataset = path.stem.split("_")[0]
    assert cfg.data.dataset == dataset
    assert cfg.model.num_classes == {"ucf101": 101, "hmdb51": 51}[dataset]
    assert cfg.model.pretrained  # real-data recipes start from ImageNet
    assert cfg.data.test_crops == 10 and cfg.data.split == 1
    if cfg.model.arch == "tsn":
        assert cfg.data.frames == 3 and cfg.train.partial_bn and cfg.train.momentum == 0.9
        assert cfg.train.weight_decay == 5e-4
        flow = cfg.model.streams == ["flow"]
        assert (cfg.train.lr, cfg.train.clip_grad, cfg.model.tsn_dropout) == (
            (0.005, 20.0, 0.7) if flow else (0.001, 40.0, 0.8))
    else:
        assert cfg.data.frames == 25
