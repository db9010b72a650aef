"""Backbones: feature sizes of torchvision / timm / cnn_small, the flow stem, and the errors."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from stfn.config import ConfigError
from stfn.errors import StfnError
from stfn.models.backbone import SmallCNN, adapt_stem, build_backbone, build_rgb_network, find_stem


@pytest.mark.parametrize(
    "name, dim",
    [
        ("cnn_small", 256),
        ("resnet18", 512),
        ("mobilenet_v3_small", 1024),
        ("efficientnet_b0", 1280),
        ("timm:test_resnet", 96),
        ("timm:test_efficientnet", None),
    ],
)
def test_feature_dim_matches_output(name, dim):
    bb = build_rgb_network(name).eval()
    with torch.no_grad():
        out = bb(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, bb.feature_dim)
    if dim is not None:
        assert bb.feature_dim == dim
    assert bb.stem.in_channels == 3


def test_cnn_small_is_small_and_ours():
    n = sum(p.numel() for p in SmallCNN().parameters())
    assert 0.5e6 < n < 1.0e6
    with torch.no_grad():
        assert SmallCNN(in_channels=4)(torch.randn(1, 4, 64, 64)).shape == (1, 256)


@pytest.mark.parametrize("name", ["cnn_small", "resnet18", "mobilenet_v3_small", "timm:test_resnet", "timm:test_vit"])
def test_flow_stem_is_channel_mean_of_rgb_kernels(name):
    bb = build_rgb_network(name)
    rgb_w = bb.stem.weight.detach().clone()
    rgb_bias = None if bb.stem.bias is None else bb.stem.bias.detach().clone()
    adapt_stem(bb, 10, cross_modality_init=True)
    w = bb.stem.weight
    assert w.shape == (rgb_w.shape[0], 10, *rgb_w.shape[2:])
    expected = rgb_w.mean(dim=1, keepdim=True).expand_as(w)
    torch.testing.assert_close(w, expected)
    for c in range(10):  # every input channel carries the same averaged kernel
        torch.testing.assert_close(w[:, c], rgb_w.mean(dim=1))
    if rgb_bias is not None:
        torch.testing.assert_close(bb.stem.bias, rgb_bias)
    assert bb.stem.in_channels == 10 and bb.in_channels == 10
    size = 224 if name == "timm:test_vit" else 64
    with torch.no_grad():
        assert bb.eval()(torch.randn(1, 10, size, size)).shape == (1, bb.feature_dim)


def test_flow_stem_without_cross_modality_init_is_fresh():
    bb = build_rgb_network("cnn_small")
    rgb_w = bb.stem.weight.detach().clone()
    adapt_stem(bb, 4, cross_modality_init=False)
    assert bb.stem.weight.shape[1] == 4
    assert not torch.allclose(bb.stem.weight, rgb_w.mean(1, keepdim=True).expand_as(bb.stem.weight))
    assert bb.stem.weight.std() > 0


def test_adapt_stem_only_replaces_the_first_conv():
    bb = build_rgb_network("resnet18")
    before = {k: v.clone() for k, v in bb.state_dict().items() if not k.startswith("net.conv1.")}
    adapt_stem(bb, 6)
    after = bb.state_dict()
    assert bb.stem_name == "conv1"
    for k, v in before.items():
        torch.testing.assert_close(after[k], v)


def test_find_stem_uses_first_rgb_conv_and_hint():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(3, 8, 3), nn.Conv2d(3, 8, 3))
    assert find_stem(net) == "1"
    assert find_stem(net, hint="2") == "2"
    assert find_stem(net, hint="0") == "1"  # the hint is not an RGB conv: fall back to the scan
    assert find_stem(net, hint="nope") == "1"
    with pytest.raises(StfnError, match="no 2D convolution"):
        find_stem(nn.Sequential(nn.Linear(3, 3)))


def test_build_backbone_flow_channels():
    bb = build_backbone("cnn_small", in_channels=10)
    with torch.no_grad():
        assert bb.eval()(torch.randn(3, 10, 32, 32)).shape == (3, 256)


@pytest.mark.parametrize("name, match", [("resnet999", "model.backbone 'resnet999'"),
                                         ("timm:not_a_model", "model.backbone 'timm:not_a_model'"),
                                         ("squeezenet1_0", "no linear classifier")])
def test_unknown_backbone_names_the_key(name, match):
    with pytest.raises(ConfigError, match=match):
        build_rgb_network(name)


def test_cnn_small_has_no_pretrained_weights():
    with pytest.raises(ConfigError, match="model.pretrained=false"):
        build_rgb_network("cnn_small", pretrained=True)


def test_offline_pretrained_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: the weights must be fetched

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(StfnError, match=r"could not be downloaded.*model\.pretrained=false"):
        build_rgb_network("resnet18", pretrained=True)


def test_offline_timm_pretrained_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(StfnError, match="timm:test_resnet.*could not be downloaded"):
        build_rgb_network("timm:test_resnet", pretrained=True)
