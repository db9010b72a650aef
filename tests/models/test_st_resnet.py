"""ST-ResNet (``arch: st_resnet``, Feichtenhofer et al. 2016): structure pinned against the authors' code
(github.com/feichtenhofer/st-resnet, ``STResNet_stage1.m`` / ``STResNet_stage2.m``), and its behaviour."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.resnet import BasicBlock, Bottleneck

from stfn.cli import main
from stfn.config import Config, ConfigError, DataConfig, ModelConfig, STResNetConfig
from stfn.engine.optim import freeze_layers
from stfn.errors import StfnError
from stfn.models import build_model
from stfn.models.backbone import build_rgb_network
from stfn.models.st_resnet import STResNet, TemporalConv, run_unit

REPO = Path(__file__).resolve().parents[2]
STAGE_UNITS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3],
               "resnet101": [3, 4, 23, 3], "resnet152": [3, 8, 36, 3]}
# The connections of STResNet_stage1.m (fusionLayer res2a .. res5a -> the residual branch of res2b .. res5b)
CONNECTIONS = [("layer1.0", "layer1.1"), ("layer2.0", "layer2.1"), ("layer3.0", "layer3.1"), ("layer4.0", "layer4.1")]
# addConv3D: the 1x1 convs res{2..5}b_branch2a / _branch2c
TEMPORAL = [f"layer{k}.1.conv{c}" for k in range(1, 5) for c in (1, 3)]


def _cfg(backbone: str = "resnet18", flow_length: int = 2, num_classes: int = 5, **st) -> ModelConfig:
    return ModelConfig(arch="st_resnet", backbone=backbone, num_classes=num_classes, flow_length=flow_length,
                       st_resnet=STResNetConfig(**st))


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_shapes_and_two_stream_score(clip):
    model = build_model(_cfg()).eval()
    assert isinstance(model, STResNet) and model.streams == ["rgb", "flow"] and model.feature_dim == 512
    with torch.no_grad():
        feats = model.forward_features(clip(b=2, t=3))
        logits, streams = model.forward_head(feats), model.stream_logits(feats)
    assert feats["rgb_feat"].shape == feats["flow_feat"].shape == (2, 3, 512)
    assert logits.shape == streams["rgb"].shape == streams["flow"].shape == (2, 5)
    # the authors' score: the mean of the two streams' classifier outputs (pre-softmax), averaged over time
    fc = model.head.fcs
    per_frame = {s: fc[s](feats[f"{s}_feat"]).mean(dim=1) for s in ("rgb", "flow")}
    assert torch.allclose(logits, (per_frame["rgb"] + per_frame["flow"]) / 2, atol=1e-6)
    model.reset_classifier(9)
    with torch.no_grad():
        assert model(clip(b=1, t=2)).shape == (1, 9)


@pytest.mark.parametrize("backbone", sorted(STAGE_UNITS))
def test_connection_and_temporal_conv_placement(backbone):
    with torch.device("meta"):
        model = build_model(_cfg(backbone))
    assert model.connections == CONNECTIONS  # 4 at every depth: the second unit of each stage
    expected = TEMPORAL if backbone in ("resnet50", "resnet101", "resnet152") else []  # BasicBlocks: no 1x1
    units = STAGE_UNITS[backbone]
    for s in ("rgb", "flow"):  # temporal convs in both streams, connections into rgb only
        stream = model.backbones[s]
        assert stream.temporal_convs == expected
        assert [n for n, m in stream.net.named_modules() if isinstance(m, TemporalConv)] == expected
        assert [len(getattr(stream.net, f"layer{k}")) for k in range(1, 5)] == units
        # segments: stem + layer1[0] | layer1[1:] + layer2[0] | ... | layer4[1:]
        starts = [sum(units[:k]) for k in range(4)]
        assert stream.bounds == [0] + [a + 1 for a in starts] + [sum(units)]


def test_temporal_conv_is_the_authors_convtime():
    conv = nn.Conv2d(6, 4, 1, bias=False)
    tconv = TemporalConv(conv)
    assert tconv.weight.shape == (4, 6, 3, 1) and tconv.bias is None  # ConvTime: 3 x 1 over (T, H*W)
    assert all(torch.equal(tconv.weight[:, :, k : k + 1], conv.weight / 3) for k in range(3))  # cat(2, W/3, W/3, W/3)
    frame = torch.randn(1, 6, 5, 5)
    with torch.no_grad():
        same = tconv(frame.repeat(2 * 4, 1, 1, 1), frames=4).view(2, 4, 4, 5, 5)  # 2 clips of 4 equal frames
        ref = conv(frame)
        assert torch.allclose(same[:, 1:3], ref.expand(2, 2, 4, 5, 5), atol=1e-6)  # interior: the 1x1 conv
        assert torch.allclose(same[:, [0, 3]], (2 / 3 * ref).expand(2, 2, 4, 5, 5), atol=1e-6)  # zero padding
        x = torch.randn(8, 6, 5, 5)
        y = tconv(x, frames=4)
        x2 = x.clone()
        x2[1] += 1.0  # frame 1 of clip 0
        changed = (tconv(x2, frames=4) - y).abs().flatten(1).amax(dim=1) > 0
    assert changed.tolist() == [True, True, True, False, False, False, False, False]  # its neighbours only
    with pytest.raises(StfnError, match="whole clips"):
        tconv(x, frames=3)
    with pytest.raises(StfnError, match="1x1"):
        TemporalConv(nn.Conv2d(6, 4, 3))


@pytest.mark.parametrize("block", [BasicBlock(8, 8), Bottleneck(32, 8),
                                   Bottleneck(16, 8, 2, nn.Sequential(nn.Conv2d(16, 32, 1, 2), nn.BatchNorm2d(32)))])
def test_run_unit_is_the_torchvision_unit(block):
    block.eval()
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        pre, out = run_unit(block, x)
        assert torch.allclose(out, block(x), atol=1e-6) and torch.equal(out, pre.relu())
        branch = torch.randn_like(x)  # the branch input replaces x in the residual branch only
        pre_b, _ = run_unit(block, x, branch=branch)
        shortcut = x if block.downsample is None else block.downsample(x)
        assert torch.allclose(pre_b - shortcut, run_unit(block, branch)[0] - (
            branch if block.downsample is None else block.downsample(branch)), atol=1e-5)


def test_connection_is_a_plain_sum_into_the_residual_branch(clip):
    """x_a' = relu(pre_a) + F(pre_a + relu(pre_m)) at res2b, computed by hand from torchvision's modules."""
    model = build_model(_cfg()).eval()
    batch = clip(b=1, t=2)
    rgb, flow = model.backbones["rgb"].net, model.backbones["flow"].net
    seen: dict[str, torch.Tensor] = {}
    hooks = [rgb.layer1[1].conv1.register_forward_pre_hook(lambda m, a: seen.setdefault("branch_in", a[0])),
             rgb.layer1[1].bn2.register_forward_hook(lambda m, a, o: seen.setdefault("branch_out", o)),
             rgb.layer2[0].conv1.register_forward_pre_hook(lambda m, a: seen.setdefault("unit_out", a[0]))]
    with torch.no_grad():
        model.forward_features(batch)
        stem = {s: n.maxpool(n.relu(n.bn1(n.conv1(batch[s].flatten(0, 1))))) for s, n in (("rgb", rgb), ("flow", flow))}
        u = rgb.layer1[0]
        pre_rgb = u.bn2(u.conv2(u.relu(u.bn1(u.conv1(stem["rgb"]))))) + stem["rgb"]  # res2a, before its ReLU
        motion = flow.layer1[0](stem["flow"])  # res2a_relu of the motion stream
        assert torch.allclose(seen["branch_in"], pre_rgb + motion, atol=1e-5)
        # the shortcut of res2b keeps the appearance stream's own relu(res2a)
        assert torch.allclose(seen["unit_out"], (seen["branch_out"] + pre_rgb.relu()).relu(), atol=1e-5)
    for h in hooks:
        h.remove()


def test_without_connections_it_is_two_independent_resnets(clip):
    off = build_model(_cfg(connections=False)).eval()
    on = build_model(_cfg()).eval()
    on.load_state_dict(off.state_dict())  # the connections have no parameters
    batch = clip(b=2, t=3)
    zero_motion = dict(batch, flow=torch.zeros_like(batch["flow"]))
    with torch.no_grad():
        f_off, f_on = off.forward_features(batch), on.forward_features(batch)
        for s in ("rgb", "flow"):  # torchvision's own forward of each stream
            ref = off.backbones[s].net(batch[s].flatten(0, 1)).view(2, 3, -1)
            assert torch.allclose(f_off[f"{s}_feat"], ref, atol=1e-5)
        assert torch.allclose(f_on["flow_feat"], f_off["flow_feat"], atol=1e-6)  # motion -> appearance only
        assert not torch.allclose(f_on["rgb_feat"], f_off["rgb_feat"], atol=1e-3)
        # the appearance features depend on the motion input only through the connections
        assert not torch.allclose(on.forward_features(zero_motion)["rgb_feat"], f_on["rgb_feat"], atol=1e-3)
        assert torch.equal(off.forward_features(zero_motion)["rgb_feat"], f_off["rgb_feat"])


@pytest.mark.parametrize("connections", [True, False])
def test_appearance_loss_reaches_the_motion_backbone(clip, connections):
    model = build_model(_cfg(connections=connections)).train()
    model.stream_logits(model.forward_features(clip(b=2, t=2)))["rgb"].sum().backward()  # appearance only
    flow = model.backbones["flow"].net
    assert model.head.fcs["flow"].weight.grad is None
    if not connections:
        assert all(p.grad is None for p in flow.parameters())
        return
    for name in ("conv1", "layer1.0.conv1", "layer4.0.conv2"):  # up to the last connection, from res5a
        assert flow.get_submodule(name).weight.grad.abs().sum() > 0, name
    assert flow.layer4[1].conv1.weight.grad is None  # beyond it, nothing reaches the appearance stream


def test_temporal_convs_at_resnet50_start_from_the_2d_weights_and_mix_frames(clip):
    torch.manual_seed(0)
    on = build_model(_cfg("resnet50")).eval()
    torch.manual_seed(0)
    flat = build_model(_cfg("resnet50", temporal_convs=False)).eval()
    for s in ("rgb", "flow"):
        for name in TEMPORAL:
            w2d = flat.backbones[s].net.get_submodule(name).weight
            assert torch.allclose(on.backbones[s].net.get_submodule(name).weight, w2d.repeat(1, 1, 3, 1) / 3)
    batch = clip(b=1, t=3)
    swapped = {k: v[:, [1, 0, 2]] for k, v in batch.items()}
    with torch.no_grad():
        for model, per_frame in ((flat, True), (on, False)):
            a, b = model.forward_features(batch)["rgb_feat"], model.forward_features(swapped)["rgb_feat"]
            assert torch.allclose(b, a[:, [1, 0, 2]], atol=1e-4) == per_frame
        # the training loop's default layout (train.channels_last): same features
        on.to(memory_format=torch.channels_last)
        assert torch.allclose(on.forward_features(swapped)["rgb_feat"], b, atol=1e-4)


@pytest.mark.parametrize("t, t_out", [(3, 1), (5, 1), (7, 2), (11, 4), (25, 11)])
def test_stage2_temporal_max_pool(clip, t, t_out):
    model = build_model(_cfg(temporal_pool=True)).eval()
    maps: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.backbones["rgb"].register_forward_hook(lambda m, a, o: maps.append(o))
    with torch.no_grad():
        feats = model.forward_features(clip(b=1, t=t, size=32))
    assert feats["rgb_feat"].shape == feats["flow_feat"].shape == (1, t_out, 512)
    last = maps[-1][1].view(1, t, 512, -1)  # res5c_relu: max over 5 frames (stride 2), then spatial mean
    k = min(5, t)
    expected = torch.stack([last[:, i : i + k].amax(dim=1).mean(dim=-1) for i in range(0, t - k + 1, 2)], dim=1)
    assert torch.allclose(feats["rgb_feat"], expected, atol=1e-6)


def test_flow_stem_is_the_cross_modality_init_of_the_rgb_stem():
    model = build_model(_cfg())
    rgb, flow = model.backbones["rgb"], model.backbones["flow"]
    assert flow.stem.weight.shape == (64, 4, 7, 7)
    assert torch.allclose(flow.stem.weight, rgb.stem.weight.mean(dim=1, keepdim=True).expand(-1, 4, -1, -1))
    assert torch.equal(flow.net.layer3[1].conv2.weight, rgb.net.layer3[1].conv2.weight)  # both start alike


def test_parameters_at_resnet50():
    """Two ResNet-50s (no classifier) + the 20-channel flow stem + the temporal taps + two classifiers."""
    cfg = _cfg("resnet50", flow_length=10, num_classes=101)
    with torch.device("meta"):
        model, resnet = build_model(cfg), build_rgb_network("resnet50")
        plain = build_model(dataclasses.replace(cfg, st_resnet=STResNetConfig(temporal_convs=False)))
    assert _params(resnet) == 23_508_032
    stem = 64 * (20 - 3) * 7 * 7
    one_by_one = sum(2 * c * (c // 4) for c in (256, 512, 1024, 2048))  # conv1 C -> C/4, conv3 C/4 -> C of res{k}b
    taps = 2 * one_by_one  # a 3x1x1 kernel has two more taps than a 1x1 one
    head = 2 * (2048 * 101 + 101)
    assert (one_by_one, taps, head) == (2_785_280, 5_570_560, 413_898)
    assert _params(model.backbones["rgb"]) == _params(resnet) + taps == 29_078_592
    assert _params(model.backbones["flow"]) == _params(resnet) + stem + taps == 29_131_904
    assert _params(model.head) == head
    assert _params(model) == 2 * _params(resnet) + stem + 2 * taps + head == 58_624_394
    assert _params(plain) == 2 * _params(resnet) + stem + head  # the connections are plain sums


def test_model_info_of_the_config(capsys):
    assert main(["model-info", "--config", str(REPO / "configs" / "st_resnet50.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["arch"], info["backbone"], info["frames"], info["size"]) == ("st_resnet", "resnet50", 5, 224)
    assert info["input"] == {"rgb": [1, 5, 3, 224, 224], "flow": [1, 5, 20, 224, 224]}
    assert info["params"] == 58_624_394 and info["output_shape"] == [1, 101]
    with torch.device("meta"):
        resnet = build_rgb_network("resnet50")
        counter = FlopCounterMode(display=False)
        with counter:
            resnet(torch.zeros(1, 3, 224, 224))
    frame = counter.get_total_flops()  # ~8.2 GFLOPs (4.1 GMACs)
    taps = 2 * sum(2 * 2 * c * (c // 4) * s * s for c, s in ((256, 56), (512, 28), (1024, 14), (2048, 7)))
    stem = 2 * 64 * (20 - 3) * 7 * 7 * 112 * 112
    parts = info["parts"]
    assert parts["backbones.rgb"]["flops"] == 5 * (frame + taps)
    assert parts["backbones.flow"]["flops"] == 5 * (frame + taps + stem)
    assert parts["head"]["flops"] == 2 * 5 * 2 * 2048 * 101
    assert 100e9 < info["flops"] < 110e9


@pytest.mark.parametrize("keys, key", [
    ({"backbone": "cnn_small"}, "model.backbone"),
    ({"backbone": "mobilenet_v3_small"}, "model.backbone"),
    ({"streams": ["rgb"]}, "model.streams"),
    ({"freeze_backbone": True}, "model.freeze_backbone"),
    ({"st_resnet": STResNetConfig(dropout=1.0)}, "model.st_resnet.dropout"),
])
def test_bad_configs_name_the_key(keys, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        build_model(dataclasses.replace(_cfg(), **keys))


def test_cached_features_and_frozen_backbones_are_refused(clip):
    with pytest.raises(ConfigError, match="'data.features'"):
        build_model(_cfg(), with_backbones=False)
    model = build_model(_cfg())
    with pytest.raises(ConfigError, match="'data.features'"):
        freeze_layers(model, Config(model=_cfg(), data=DataConfig(features="features_dir")))
    with pytest.raises(StfnError, match="'data.features'"):
        model({"rgb_feat": torch.zeros(1, 2, 512), "flow_feat": torch.zeros(1, 2, 512)})
    with pytest.raises(StfnError, match=r"model.flow_length=2"):
        model({"rgb": torch.zeros(1, 2, 3, 32, 32), "flow": torch.zeros(1, 2, 6, 32, 32)})
    with pytest.raises(StfnError, match="same B, T, H and W"):
        model({"rgb": torch.zeros(1, 2, 3, 32, 32), "flow": torch.zeros(1, 3, 4, 32, 32)})
