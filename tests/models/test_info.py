"""``stfn.models.info.model_summary`` and the ``stfn model-info`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from stfn.cli import main
from stfn.config import HeadConfig, ModelConfig
from stfn.models import build_model
from stfn.models.backbone import SmallCNN
from stfn.models.info import model_summary

REPO = Path(__file__).resolve().parents[2]


def _conv_flops_small_cnn(in_channels: int, size: int) -> int:
    """Closed form: 2 * MACs of the five 3x3 convolutions of cnn_small (stride 2, 2, 2, 2, 1)."""
    flops, c, s = 0, in_channels, size
    for i, w in enumerate(SmallCNN.widths):
        s = (s + 2 - 3) // (1 if i == len(SmallCNN.widths) - 1 else 2) + 1
        flops += 2 * c * w * 9 * s * s
        c = w
    return flops


def test_summary_counts_match_the_model():
    cfg = ModelConfig(backbone="cnn_small", num_classes=7, flow_length=2, head=HeadConfig(hidden_dim=16))
    info = model_summary(cfg, frames=3, size=32)
    model = build_model(cfg)
    assert info["output_shape"] == [1, 7]
    assert info["input"] == {"rgb": [1, 3, 3, 32, 32], "flow": [1, 3, 4, 32, 32]}
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["parts"]["backbones.rgb"]["params"] == sum(p.numel() for p in model.backbones["rgb"].parameters())
    assert info["parts"]["head"]["params"] == sum(p.numel() for p in model.head.parameters())
    assert sum(p["params"] for p in info["parts"].values()) == info["params"]
    # FLOPs per video: T frames through each backbone, checked against the closed form
    assert info["parts"]["backbones.rgb"]["flops"] == 3 * _conv_flops_small_cnn(3, 32)
    assert info["parts"]["backbones.flow"]["flops"] == 3 * _conv_flops_small_cnn(4, 32)
    assert 0 < info["parts"]["head"]["flops"] < info["parts"]["backbones.rgb"]["flops"]
    assert info["flops"] == sum(p["flops"] for p in info["parts"].values())
    # and against torch's counter on a real (CPU) pass
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()({"rgb": torch.zeros(1, 3, 3, 32, 32), "flow": torch.zeros(1, 3, 4, 32, 32)})
    assert counter.get_total_flops() == info["flops"]


def test_summary_scales_with_frames_and_respects_freezing():
    cfg = ModelConfig(backbone="cnn_small", streams=["rgb"], freeze_backbone=True, head=HeadConfig(hidden_dim=8))
    a, b = model_summary(cfg, frames=2, size=32), model_summary(cfg, frames=8, size=32)
    assert b["parts"]["backbones.rgb"]["flops"] == 4 * a["parts"]["backbones.rgb"]["flops"]
    assert list(a["parts"]) == ["backbones.rgb", "head"]
    assert a["trainable_params"] == a["parts"]["head"]["params"] < a["params"]


def test_summary_of_pretrained_config_needs_no_download():
    info = model_summary(ModelConfig(backbone="resnet50", pretrained=True), frames=2, size=64)
    assert info["feature_dim"] == 2048 and info["output_shape"] == [1, 101]


def test_cli_default_is_the_default_stfn(capsys):
    assert main(["model-info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "stfn" and info["backbone"] == "resnet18" and info["streams"] == ["rgb", "flow"]
    assert info["input"]["flow"] == [1, 8, 10, 224, 224] and info["output_shape"] == [1, 101]
    assert 11e6 < info["parts"]["backbones.rgb"]["params"] < 11.3e6  # resnet18 without its classifier
    assert 25e9 < info["parts"]["backbones.rgb"]["flops"] < 33e9  # 8 x 3.6 GFLOPs (1.8 GMACs) per frame


def test_cli_table_with_config_and_overrides(capsys):
    args = ["model-info", "--config", str(REPO / "configs" / "tiny.yaml"), "--set", "model.arch=tsn",
            "--frames", "5", "--size", "40"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("tsn: backbone cnn_small")
    assert "rgb (1, 5, 3, 40, 40)" in out and "backbones.flow" in out and "output: logits (1, 10)" in out


@pytest.mark.parametrize("args, message", [
    (["--set", "model.head.fusion=add"], "model.head.fusion"),
    (["--set", "model.nope=1"], "model.nope"),
    (["--frames", "0"], "--frames"),
    (["--config", "does/not/exist.yaml"], "does/not/exist.yaml"),
])
def test_cli_errors_are_one_sentence(capsys, args, message):
    assert main(["model-info", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
