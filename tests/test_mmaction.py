"""MMAction2 TSN checkpoints as stfn checkpoints (``stfn.mmaction``): the key map against MMAction2's own
names, a converted network computing what the MMAction2 weights compute (RGB and flow), and the files
and keys that are refused in one sentence. The command line: tests/commands/test_import_mmaction.py.

The synthetic MMAction2 checkpoints are written from a torchvision ResNet by the rule MMAction2 uses to
load torchvision weights into its ResNet (``mmaction/models/backbones/resnet.py``,
``_load_torchvision_checkpoint``), read forwards: every ``ConvModule`` (the stem ``conv1``, each block's
``conv1``..``conv3``, a stage's first ``downsample``) has the children ``conv`` and ``bn``
(``mmcv/cnn/bricks/conv_module.py``, ``build_norm_layer``), and its torchvision counterparts are
``name`` / ``name.replace("conv", "bn")``, or ``downsample.0`` / ``downsample.1``; ``TSNHead``'s
classifier is ``cls_head.fc_cls``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from stfn.config import ModelConfig
from stfn.data.transforms import normalize_flow, normalize_rgb
from stfn.engine.checkpoint import load_backbone, load_model
from stfn.errors import StfnError
from stfn.mmaction import MMActionError, convert_checkpoint, mmaction_key_map, resnet_depth
from stfn.models import build_model

BN_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
SIZE = 64  # input side: resnet50 at 64 px, one clip of 2 frames, runs in a blink


def convmodules(net: nn.Module) -> list[str]:
    """The ``ConvModule`` names of MMAction2's ResNet of the same depth as torchvision's ``net``."""
    names = ["conv1"]
    for i in range(1, 5):
        for j, block in enumerate(getattr(net, f"layer{i}")):
            names += [f"layer{i}.{j}.conv{k}" for k in (1, 2, 3) if hasattr(block, f"conv{k}")]
            names += [f"layer{i}.{j}.downsample"] if block.downsample is not None else []
    return names


def reference(depth: int = 50, in_channels: int = 3, num_classes: int = 5) -> tuple[nn.Module, nn.Linear]:
    """A torchvision ResNet without its classifier (random weights and BatchNorm statistics, eval
    mode) and a linear layer: the network an MMAction2 TSN computes per frame."""
    import torchvision

    g = torch.Generator().manual_seed(depth + in_channels)
    net = torchvision.models.get_model(f"resnet{depth}")
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    net.fc = nn.Identity()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, (2 / (m.weight[0].numel())) ** 0.5, generator=g)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0, generator=g)
                m.bias.uniform_(-0.1, 0.1, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.num_batches_tracked.fill_(7)
    fc = nn.Linear(512 if depth < 50 else 2048, num_classes)
    with torch.no_grad():
        fc.weight.normal_(0, 0.05, generator=g)
        fc.bias.normal_(0, 0.05, generator=g)
    return net.eval(), fc.eval()


def mmaction_state(net: nn.Module, fc: nn.Linear) -> dict[str, torch.Tensor]:
    """``net`` + ``fc`` as MMAction2's Recognizer2D(ResNet, TSNHead) names them (the rule above)."""
    tv = net.state_dict()
    state = {}
    for name in convmodules(net):
        conv, bn = (name + ".0", name + ".1") if "downsample" in name else (name, name.replace("conv", "bn"))
        state[f"backbone.{name}.conv.weight"] = tv.pop(f"{conv}.weight")
        for part in BN_PARTS:
            state[f"backbone.{name}.bn.{part}"] = tv.pop(f"{bn}.{part}")
    assert not tv, f"torchvision weights the rule left out: {sorted(tv)[:3]}"
    state["cls_head.fc_cls.weight"], state["cls_head.fc_cls.bias"] = fc.weight.detach(), fc.bias.detach()
    return {k: v.clone() for k, v in state.items()}


def save_mmaction(path: Path, state: dict[str, torch.Tensor], meta: dict | None = None) -> Path:
    """An MMAction2 checkpoint file: ``{"meta": ..., "state_dict": ...}``."""
    meta = {"epoch": 100, "iter": 12345, "mmengine_version": "0.10.4", "seed": 0,
            "experiment_name": "tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb",
            **(meta or {})}
    torch.save({"meta": meta, "state_dict": state}, path)
    return path


def reference_logits(net: nn.Module, fc: nn.Linear, frames: torch.Tensor) -> torch.Tensor:
    """MMAction2's TSN on ``frames`` ``(T, C, H, W)`` (already normalised its way): average consensus."""
    with torch.no_grad():
        return fc(net(frames).mean(0, keepdim=True))


def stfn_logits(path: Path, stream: str, frames: torch.Tensor) -> torch.Tensor:
    model, _, _ = load_model(path)  # strict: no missing or unexpected tensor
    with torch.no_grad():
        return model({stream: frames.unsqueeze(0)})


def test_key_map_is_mmaction2s_convmodule_rule() -> None:
    keys = ["backbone.conv1.conv.weight", "backbone.conv1.bn.running_mean", "backbone.layer1.0.conv1.conv.weight",
            "backbone.layer1.0.conv3.bn.num_batches_tracked", "backbone.layer1.0.downsample.conv.weight",
            "backbone.layer3.5.downsample.bn.bias", "cls_head.fc_cls.weight", "cls_head.fc_cls.bias",
            "data_preprocessor.mean"]
    assert mmaction_key_map(keys, "flow") == {
        "backbone.conv1.conv.weight": "backbones.flow.net.conv1.weight",
        "backbone.conv1.bn.running_mean": "backbones.flow.net.bn1.running_mean",
        "backbone.layer1.0.conv1.conv.weight": "backbones.flow.net.layer1.0.conv1.weight",
        "backbone.layer1.0.conv3.bn.num_batches_tracked": "backbones.flow.net.layer1.0.bn3.num_batches_tracked",
        "backbone.layer1.0.downsample.conv.weight": "backbones.flow.net.layer1.0.downsample.0.weight",
        "backbone.layer3.5.downsample.bn.bias": "backbones.flow.net.layer3.5.downsample.1.bias",
        "cls_head.fc_cls.weight": "head.fcs.flow.weight",
        "cls_head.fc_cls.bias": "head.fcs.flow.bias",
    }
    # MMAction2's torchvision.resnet50 backbone keeps torchvision's names
    tv = ["backbone.conv1.weight", "backbone.bn1.weight", "backbone.layer2.0.downsample.1.running_var",
          "cls_head.fc_cls.weight", "cls_head.fc_cls.bias"]
    assert mmaction_key_map(tv, "rgb")["backbone.layer2.0.downsample.1.running_var"] == \
        "backbones.rgb.net.layer2.0.downsample.1.running_var"


def test_the_synthetic_checkpoint_has_mmaction2s_names_and_shapes() -> None:
    net, fc = reference(50, 10, 400)
    state = mmaction_state(net, fc)
    shapes = {"backbone.conv1.conv.weight": (64, 10, 7, 7), "backbone.conv1.bn.running_mean": (64,),
              "backbone.layer1.0.conv1.conv.weight": (64, 64, 1, 1), "backbone.layer1.0.conv2.conv.weight": (64, 64, 3, 3),
              "backbone.layer1.0.conv3.conv.weight": (256, 64, 1, 1),
              "backbone.layer1.0.downsample.conv.weight": (256, 64, 1, 1),
              "backbone.layer4.2.conv3.bn.num_batches_tracked": (), "cls_head.fc_cls.weight": (400, 2048)}
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert len(state) == 53 * 6 + 2 and resnet_depth(state) == 50  # 53 ConvModules x (conv + 5 of BN) + fc_cls
    assert "backbone.layer1.1.downsample.conv.weight" not in state


def test_an_rgb_resnet50_computes_what_mmaction2s_does(tmp_path: Path) -> None:
    net, fc = reference(50, 3, 5)
    src = save_mmaction(tmp_path / "tsn_r50_rgb.pth", mmaction_state(net, fc))
    ckpt = convert_checkpoint(src, out=tmp_path / "tsn_r50_rgb.pt")
    q = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    expected = reference_logits(net, fc, (q.float() - mean) / std)  # MMAction2's data_preprocessor
    assert torch.allclose(stfn_logits(tmp_path / "tsn_r50_rgb.pt", "rgb", normalize_rgb(q)), expected,
                          rtol=1e-4, atol=1e-5)
    cfg = ckpt["config"]
    assert cfg["model"] | {"head": None} == cfg["model"] | {  # only the keys the conversion sets
        "arch": "tsn", "streams": ["rgb"], "backbone": "resnet50", "num_classes": 5, "pretrained": False,
        "tsn_dropout": 0.4, "head": None}
    assert {k: cfg["data"][k] for k in ("frames", "test_crops", "scale_size", "crop_size")} == \
        {"frames": 25, "test_crops": 10, "scale_size": 256, "crop_size": 224}
    assert ckpt["classes"] == [f"class_{i}" for i in range(5)] and ckpt["epoch"] == 100
    source = ckpt["source"]
    assert source["format"] == "mmaction2" and source["path"] == str(src.resolve())
    assert source["mmaction_meta"]["experiment_name"].startswith("tsn_imagenet-pretrained-r50")
    assert source["normalisation"]["scale_folded_into_first_conv"] is False  # same mean and std: weights as they are
    torch.testing.assert_close(ckpt["model"]["backbones.rgb.net.conv1.weight"], net.conv1.weight)


def test_a_flow_resnet50_computes_what_mmaction2s_does(tmp_path: Path) -> None:
    """Flow: 5 fields x (x, y) interleaved in both; MMAction2's (q - 128) / 128 against stfn's
    (q - 127.5) / 127.5: the scale is folded into the first convolution, the 1/256 shift is what is
    left (half a grey level). A DataParallel ``module.`` prefix and an old file without
    ``num_batches_tracked`` convert too."""
    net, fc = reference(50, 10, 4)
    state = {f"module.{k}": v for k, v in mmaction_state(net, fc).items() if not k.endswith("num_batches_tracked")}
    src = save_mmaction(tmp_path / "tsn_r50_flow.pth", state)
    ckpt = convert_checkpoint(src, out=tmp_path / "flow.pt")
    assert ckpt["config"]["model"]["streams"] == ["flow"] and ckpt["config"]["model"]["flow_length"] == 5
    assert ckpt["prepare"]["flow"] == {"algorithm": "tvl1", "bound": 20.0}  # MMAction2's flow: TV-L1, bound 20
    norm = ckpt["source"]["normalisation"]
    assert norm["scale_folded_into_first_conv"] is True and norm["unfolded_input_shift"] == pytest.approx(1 / 256)
    q = torch.randint(0, 256, (2, 10, SIZE, SIZE), dtype=torch.uint8)
    expected = reference_logits(net, fc, (q.float() - 128) / 128 + 1 / 256)
    assert torch.allclose(stfn_logits(tmp_path / "flow.pt", "flow", normalize_flow(q)), expected, rtol=1e-4, atol=1e-5)


def test_mean_and_std_in_the_checkpoint_are_folded_exactly(tmp_path: Path) -> None:
    """``data_preprocessor.mean`` / ``.std`` buffers (older MMAction2 files keep them) say how the
    network was fed: another std is folded into the first convolution, exactly."""
    net, fc = reference(18, 3, 3)
    state = mmaction_state(net, fc)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([64.0, 32.0, 128.0]).view(3, 1, 1)
    state["data_preprocessor.mean"], state["data_preprocessor.std"] = mean, std
    ckpt = convert_checkpoint(save_mmaction(tmp_path / "r18.pth", state), out=tmp_path / "r18.pt")
    assert ckpt["source"]["normalisation"]["mmaction2"]["from"] == "the checkpoint's data_preprocessor"
    q = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    expected = reference_logits(net, fc, (q.float() - mean) / std)
    assert torch.allclose(stfn_logits(tmp_path / "r18.pt", "rgb", normalize_rgb(q)), expected, rtol=1e-4, atol=1e-5)


def test_converted_backbones_initialise_a_two_stream_network(tmp_path: Path) -> None:
    """``train.init_rgb`` / ``train.init_flow``: the two-stage protocol reads the converted files."""
    paths = {}
    for stream, channels in (("rgb", 3), ("flow", 10)):
        net, fc = reference(18, channels, 3)
        paths[stream] = tmp_path / f"{stream}.pt"
        convert_checkpoint(save_mmaction(tmp_path / f"{stream}.pth", mmaction_state(net, fc)), out=paths[stream])
    model = build_model(ModelConfig(arch="stfn", streams=["rgb", "flow"], backbone="resnet18", num_classes=3,
                                    flow_length=5))
    for stream, path in paths.items():
        load_backbone(model, stream, path)
    conv = model.backbones["flow"].net.conv1.weight
    assert torch.equal(conv, torch.load(paths["flow"], weights_only=True)["model"]["backbones.flow.net.conv1.weight"])


def test_class_names_from_a_file(tmp_path: Path) -> None:
    net, fc = reference(18, 3, 3)
    src = save_mmaction(tmp_path / "r18.pth", mmaction_state(net, fc))
    (tmp_path / "classInd.txt").write_text("1 Jump\r\n2 Run\r\n3 Walk\r\n")
    (tmp_path / "names.txt").write_text("abseiling\nair drumming\n\nanswering questions\n")
    assert convert_checkpoint(src, classes=tmp_path / "classInd.txt")["classes"] == ["Jump", "Run", "Walk"]
    assert convert_checkpoint(src, classes=tmp_path / "names.txt")["classes"] == \
        ["abseiling", "air drumming", "answering questions"]


class Payload:
    """A malicious pickle: loading it would call a function (harmless here, but the loader cannot tell)."""

    def __reduce__(self):
        return (os.getcwd, ())


def _one_sentence(error: pytest.ExceptionInfo, *expected: str) -> str:
    text = str(error.value)
    assert "\n" not in text and "weights_only=False" not in text and all(e in text for e in expected), text
    return text


def test_a_pickle_with_code_is_refused_in_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"meta": {}, "state_dict": {"backbone.conv1.conv.weight": Payload()}}, path)
    with pytest.raises(StfnError) as err:
        convert_checkpoint(path)
    _one_sentence(err, f"'{path}' contains code that loading it would run (it refers to {os.getcwd.__module__}.getcwd)")
    torch.save({"meta": {"hook_msgs": {"best_score": __import__("numpy").float64(0.7)}}, "state_dict": {}}, path)
    with pytest.raises(StfnError) as err:
        convert_checkpoint(path)
    _one_sentence(err, f"MMAction2 checkpoint '{path}' holds numpy.", "publish_model.py")


@pytest.fixture(scope="module")
def r18_state() -> dict[str, torch.Tensor]:
    return mmaction_state(*reference(18, 3, 3))


@pytest.mark.parametrize(("change", "expected"), [
    ({"backbone.layer1.0.conv1.conv.bias": torch.zeros(64)}, "holds 'backbone.layer1.0.conv1.conv.bias', which no "
                                                             "weight of a TSN ResNet matches"),
    ({"backbone.layer1.0.conv1.net.conv.weight": torch.zeros(1)}, "a TSM / TIN backbone"),
    ({"cls_head.fc_cls.weight": None}, "has no 'cls_head.fc_cls.weight': not a TSN recognizer"),
    ({"cls_head.fc_cls.weight": torch.zeros(3, 256)}, "'cls_head.fc_cls.weight' has shape (3, 256) where a ResNet-18 "
                                                      "TSN has (3, 512)"),
    ({"backbone.conv1.conv.weight": torch.zeros(64, 3, 3, 7, 7)}, "a 3D network (I3D, SlowOnly, ...) is not a TSN"),
    ({"backbone.conv1.conv.weight": None, "backbone.conv1_7x7_s2.weight": torch.zeros(64, 3, 7, 7)},
     "holds a BN-Inception backbone ('backbone.conv1_7x7_s2.weight'); stfn has no BN-Inception network"),
    ({"backbone.layer4.1.conv1.bn.running_var": None}, "lacks 'backbone.layer4.1.conv1.bn.running_var'"),
])
def test_a_checkpoint_that_does_not_fit_names_the_key(change, expected, r18_state, tmp_path: Path) -> None:
    state = dict(r18_state)
    for key, value in change.items():
        state.pop(key) if value is None else state.__setitem__(key, value)
    path = save_mmaction(tmp_path / "bad.pth", state)
    with pytest.raises(StfnError) as err:
        convert_checkpoint(path)
    _one_sentence(err, str(path), expected)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"modality": "flow"}, "modality is flow but MMAction2 checkpoint '{path}' is an RGB model (its first "
                           "convolution takes 3 channels)"),
    ({"flow_length": 5}, "flow_length is given (5) but MMAction2 checkpoint '{path}' is an RGB model"),
    ({"classes": ["a", "b"]}, "classes lists 2 names but MMAction2 checkpoint '{path}' has 3 outputs"),
    ({"overrides": ["model.backbone=resnet50"]}, "overrides may set data.*, train.* and name, not 'model.backbone'"),
    ({"out": "model.pth"}, "out must be a .pt file, got 'model.pth'"),
])
def test_options_that_do_not_fit_name_the_option(kwargs, expected, r18_state, tmp_path: Path) -> None:
    path = save_mmaction(tmp_path / "r18.pth", r18_state)
    with pytest.raises(StfnError) as err:
        convert_checkpoint(path, **kwargs)
    _one_sentence(err, expected.format(path=path))


def test_a_style_caffe_resnet_is_refused(r18_state, tmp_path: Path) -> None:
    """The weights of a caffe-style ResNet (stride on the first 1x1 convolution) fit torchvision's
    shapes but compute another network: its recorded config gives it away."""
    path = save_mmaction(tmp_path / "caffe.pth", r18_state,
                         {"cfg": "model = dict(backbone=dict(type='ResNet', depth=18, style='caffe'))\n"})
    with pytest.raises(MMActionError) as err:
        convert_checkpoint(path)
    _one_sentence(err, "is a caffe-style ResNet")


def test_the_test_protocol_comes_from_the_recorded_config(r18_state, tmp_path: Path) -> None:
    cfg = ("test_pipeline = [\n    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=8, test_mode=True),\n"
           "    dict(type='RawFrameDecode'),\n    dict(type='Resize', scale=(-1, 256)),\n"
           "    dict(type='ThreeCrop', crop_size=256),\n    dict(type='FormatShape', input_format='NCHW'),\n]\n")
    path = save_mmaction(tmp_path / "r18.pth", r18_state, {"cfg": cfg, "dataset_meta": {"classes": ["x", "y", "z"]}})
    ckpt = convert_checkpoint(path)
    assert {k: ckpt["config"]["data"][k] for k in ("frames", "test_crops", "scale_size", "crop_size")} == \
        {"frames": 8, "test_crops": 3, "scale_size": 256, "crop_size": 256}
    assert ckpt["classes"] == ["x", "y", "z"]
    assert ckpt["source"]["test_protocol"]["from"] == "the checkpoint's test_pipeline"
