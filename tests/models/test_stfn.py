"""The two-stream networks end to end: build_model, shapes, gradients, fusion, frame order, errors."""

from __future__ import annotations

import pytest
import torch

from stfn.config import ConfigError
from stfn.errors import StfnError
from stfn.models import TSN, TwoStreamNet, build_model

ARCHS = ["stfn", "tsn", "temporal_inception"]


@pytest.mark.parametrize("t", [1, 8, 25])
@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_cnn_small(small_cfg, clip, arch, t):
    model = build_model(small_cfg(arch=arch)).eval()
    batch = clip(b=2, t=t)
    with torch.no_grad():
        feats = model.forward_features(batch)
        assert feats["rgb_feat"].shape == (2, t, 256) and feats["flow_feat"].shape == (2, t, 256)
        assert model(batch).shape == (2, 5)
        torch.testing.assert_close(model.forward_head(feats), model(batch))


@pytest.mark.parametrize("backbone, dim", [("resnet18", 512), ("mobilenet_v3_small", 1024), ("timm:test_resnet", 96)])
def test_shapes_other_backbones(small_cfg, clip, backbone, dim):
    # one full network per backbone; the other heads run on its features (building backbones is the slow part)
    model = build_model(small_cfg(backbone=backbone)).eval()
    heads = [build_model(small_cfg(arch=a, backbone=backbone), with_backbones=False).eval() for a in ("tsn", "temporal_inception")]
    assert model.feature_dim == model.backbones["rgb"].feature_dim == dim
    assert all(h.feature_dim == dim for h in heads)
    with torch.no_grad():
        for t in (1, 8, 25):
            batch = clip(b=1, t=t, size=32)
            feats = model.forward_features(batch)
            assert feats["rgb_feat"].shape == feats["flow_feat"].shape == (1, t, dim)
            assert model(batch).shape == (1, 5)
            for h in heads:
                assert h(feats).shape == (1, 5)


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_size_is_free(small_cfg, clip, arch):
    """Test views are flattened into the batch: outputs per sample do not depend on the batch."""
    model = build_model(small_cfg(arch=arch)).eval()
    batch = clip(b=6, t=3)
    with torch.no_grad():
        full = model(batch)
        parts = torch.cat([model({k: v[i : i + 2] for k, v in batch.items()}) for i in (0, 2, 4)])
    torch.testing.assert_close(full, parts, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch, backbone", [(a, "cnn_small") for a in ARCHS] + [("stfn", "resnet18")])
def test_gradients_reach_both_backbones_and_head(small_cfg, clip, arch, backbone):
    model = build_model(small_cfg(arch=arch, backbone=backbone)).train()
    loss = torch.nn.functional.cross_entropy(model(clip(b=2, t=3)), torch.tensor([1, 3]))
    loss.backward()
    for part in (model.backbones["rgb"], model.backbones["flow"], model.head):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0
    assert model.backbones["rgb"].stem.weight.grad.abs().sum() > 0
    assert model.backbones["flow"].stem.weight.grad.abs().sum() > 0


def _appearance_vector(model, batch):
    with torch.no_grad():
        return model.head.stream_vectors(model.forward_features(batch))["rgb"]


# These tests run in train mode: untrained BatchNorm running statistics (mean 0, variance 1) shrink
# eval-mode activations of a random network to ~1e-3, which hides every effect in rounding. Each
# stream has its own BatchNorm layers, so batch statistics do not leak from one stream to the other.


@pytest.mark.parametrize("fusion", ["none", "sum", "multiply", "concat", "gated"])
@pytest.mark.parametrize("direction", ["motion_to_appearance", "both", "appearance_to_motion"])
def test_flow_reaches_appearance_only_through_fusion(small_cfg, clip, fusion, direction):
    model = build_model(small_cfg(head={"fusion": fusion, "fusion_direction": direction})).train()
    a = clip(b=2, t=4, seed=1)
    b = dict(a, flow=clip(b=2, t=4, seed=2)["flow"])  # same RGB, other flow
    va, vb = _appearance_vector(model, a), _appearance_vector(model, b)
    if fusion == "none" or direction == "appearance_to_motion":
        torch.testing.assert_close(va, vb, rtol=0, atol=0)
    else:
        assert (va - vb).abs().max() > 1e-2 * va.abs().max()
    with torch.no_grad():
        assert not torch.allclose(model(a), model(b))  # the classifier always sees both streams


def _reversed(batch):
    return {k: v.flip(1) for k, v in batch.items()}


def _ramp_clip(t=8):
    """Frames with a clear temporal structure (a brightness / motion ramp)."""
    g = torch.Generator().manual_seed(3)
    ramp = torch.linspace(-2, 2, t).view(1, t, 1, 1, 1)
    return {"rgb": torch.randn(2, 1, 3, 32, 32, generator=g) + ramp,
            "flow": torch.randn(2, 1, 4, 32, 32, generator=g) * ramp}


@pytest.mark.parametrize("backbone", ["cnn_small", "timm:test_resnet"])
def test_frame_order_matters_to_stfn_not_to_tsn(small_cfg, backbone):
    # train mode (see above) with dropout off; the BatchNorm statistics over the B*T frames are the same
    # for both orders, so only the temporal modelling can tell the orders apart
    batch = _ramp_clip()
    stfn = build_model(small_cfg(backbone=backbone, head={"dropout": 0.0})).train()
    tsn = build_model(small_cfg(arch="tsn", backbone=backbone, tsn_dropout=0.0)).train()
    with torch.no_grad():
        y, y_rev = stfn(batch), stfn(_reversed(batch))
        assert (y - y_rev).abs().max() > 1e-2 * y.abs().max()
        torch.testing.assert_close(tsn(batch), tsn(_reversed(batch)))
    stfn.eval()
    with torch.no_grad():
        assert (stfn(batch) - stfn(_reversed(batch))).abs().max() > 1e-6


def test_cached_features_pass_through(small_cfg, clip):
    model = build_model(small_cfg()).eval()
    batch = clip(b=2, t=5)
    with torch.no_grad():
        feats = model.forward_features(batch)
        again = model.forward_features(feats)
        assert again["rgb_feat"] is feats["rgb_feat"]
        torch.testing.assert_close(model(feats), model(batch))
        mixed = {"rgb_feat": feats["rgb_feat"], "flow": batch["flow"]}
        torch.testing.assert_close(model(mixed), model(batch))


def test_head_only_model(small_cfg, clip):
    full = build_model(small_cfg())
    head_only = build_model(small_cfg(), with_backbones=False)
    assert len(head_only.backbones) == 0 and head_only.feature_dim == 256
    head_only.head.load_state_dict(full.head.state_dict())
    full.eval(), head_only.eval()
    batch = clip(b=2, t=4)
    with torch.no_grad():
        feats = full.forward_features(batch)
        torch.testing.assert_close(head_only(feats), full(batch))
    with pytest.raises(StfnError, match="no rgb backbone"):
        head_only(batch)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_single_stream_models(small_cfg, clip, arch, stream):
    model = build_model(small_cfg(arch=arch, streams=[stream])).eval()
    assert list(model.backbones) == [stream] and model.streams == [stream]
    batch = {stream: clip(b=2, t=4)[stream]}
    with torch.no_grad():
        assert model(batch).shape == (2, 5)
    if stream == "flow":
        assert model.backbones["flow"].stem.in_channels == 4
    with pytest.raises(StfnError, match=f"neither '{stream}' nor '{stream}_feat'"):
        model({})


def test_streams_are_canonical_and_flow_stem_copies_rgb(small_cfg):
    model = build_model(small_cfg(streams=["flow", "rgb"]))
    assert model.streams == ["rgb", "flow"] and list(model.backbones) == ["rgb", "flow"]
    rgb, flow = model.backbones["rgb"].stem.weight, model.backbones["flow"].stem.weight
    assert flow.shape[1] == 4
    torch.testing.assert_close(flow, rgb.mean(1, keepdim=True).expand_as(flow))
    assert flow.data_ptr() != rgb.data_ptr()
    # everything after the stem starts from the same (RGB) weights, as with ImageNet initialisation
    r, f = model.backbones["rgb"].state_dict(), model.backbones["flow"].state_dict()
    stem = "net." + model.backbones["rgb"].stem_name + ".weight"
    assert all(torch.equal(r[k], f[k]) for k in r if k != stem)


def test_tsn_interface(small_cfg, clip):
    model = build_model(small_cfg(arch="tsn", fusion_weights=[1.0, 1.5], tsn_dropout=0.0)).eval()
    assert isinstance(model, TSN)
    batch = clip(b=2, t=3)
    with torch.no_grad():
        feats = model.forward_features(batch)
        per_stream = model.stream_logits(feats)
        expected = (per_stream["rgb"] + 1.5 * per_stream["flow"]) / 2.5  # TSN: weighted sum of logits
        torch.testing.assert_close(model(batch), expected)
    soft = build_model(small_cfg(arch="tsn", fusion_rule="softmax", tsn_dropout=0.0)).eval()
    soft.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = (per_stream["rgb"].softmax(1) + 1.5 * per_stream["flow"].softmax(1)) / 2.5
        torch.testing.assert_close(soft(batch).softmax(1), expected)
    with pytest.raises(ConfigError, match="model.fusion_rule"):
        build_model(small_cfg(arch="tsn", fusion_rule="max"))
    assert not isinstance(build_model(small_cfg()), TSN)


def test_reset_classifier(small_cfg, clip):
    for arch in ARCHS:
        model = build_model(small_cfg(arch=arch))
        model.reset_classifier(17)
        with torch.no_grad():
            assert model.eval()(clip(b=1, t=2)).shape == (1, 17)


def test_freeze_backbone(small_cfg, clip):
    model = build_model(small_cfg(freeze_backbone=True))
    assert isinstance(model, TwoStreamNet)
    assert not any(p.requires_grad for p in model.backbones.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert not model.backbones.training and model.head.training
    stats = model.backbones["rgb"].net.features[1].running_mean.clone()
    model(clip(b=2, t=3)).sum().backward()
    torch.testing.assert_close(model.backbones["rgb"].net.features[1].running_mean, stats)
    assert all(p.grad is None for p in model.backbones.parameters())


def test_freeze_backbones_after_building(small_cfg, clip):
    """``freeze_backbones`` (what ``train`` calls for cached features) is ``freeze_backbone=True``."""
    model, frozen = build_model(small_cfg()), build_model(small_cfg(freeze_backbone=True))
    assert not model.freeze_backbone and all(p.requires_grad for p in model.parameters())
    model.freeze_backbones()
    assert model.freeze_backbone
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in frozen.parameters()]
    model.train()
    assert not any(m.training for m in model.backbones.modules()) and model.head.training
    model(clip(b=2, t=3)).sum().backward()
    assert all(p.grad is None for p in model.backbones.parameters())


def test_wrong_input_shapes_are_clear(small_cfg, clip):
    model = build_model(small_cfg(flow_length=5)).eval()
    batch = clip(b=1, t=2, flow_length=2)
    with pytest.raises(StfnError, match=r"batch\['flow'\].*model.flow_length=5"):
        model(batch)
    with pytest.raises(StfnError, match=r"rgb_feat.*\(B, T, 256\)"):
        model({"rgb_feat": torch.zeros(1, 2, 100), "flow_feat": torch.zeros(1, 2, 256)})


@pytest.mark.parametrize(
    "keys, name",
    [
        ({"arch": "i3d"}, "model.arch"),
        ({"streams": []}, "model.streams"),
        ({"streams": ["rgb", "depth"]}, "model.streams"),
        ({"streams": ["rgb", "rgb"]}, "model.streams"),
        ({"num_classes": 0}, "model.num_classes"),
        ({"flow_length": 0}, "model.flow_length"),
        ({"tsn_dropout": 1.0}, "model.tsn_dropout"),
        ({"fusion_weights": [1.0]}, "model.fusion_weights"),
        ({"fusion_weights": [1.0, -1.0]}, "model.fusion_weights"),
        ({"streams": ["flow"], "fusion_weights": [1.0, 0.0]}, "model.fusion_weights"),
        ({"backbone": ""}, "model.backbone"),
        ({"head": {"fusion": "add"}}, "model.head.fusion"),
        ({"head": {"fusion_direction": "up"}}, "model.head.fusion_direction"),
        ({"head": {"fusion_place": "middle"}}, "model.head.fusion_place"),
        ({"head": {"pooling": "median"}}, "model.head.pooling"),
        ({"head": {"kernel_sizes": [1, 4]}}, "model.head.kernel_sizes"),
        ({"head": {"kernel_sizes": []}}, "model.head.kernel_sizes"),
        ({"head": {"dilations": [1, 2]}}, "model.head.dilations"),
        ({"head": {"blocks": -1}}, "model.head.blocks"),
        ({"head": {"hidden_dim": 0}}, "model.head.hidden_dim"),
        ({"head": {"dropout": -0.1}}, "model.head.dropout"),
    ],
)
def test_bad_config_values_name_the_key(small_cfg, keys, name):
    head = keys.pop("head", None)
    with pytest.raises(ConfigError, match=f"'{name}'"):
        build_model(small_cfg(head=head, **keys))


def test_dilations_of_ones_follow_kernel_sizes(small_cfg, clip):
    model = build_model(small_cfg(head={"kernel_sizes": [3, 5], "dilations": [1, 1, 1]})).eval()
    block = model.head.stacks["rgb"]["blocks"][0]
    assert [b[1][0].dilation[0] for b in block.branches[:2]] == [1, 1]
    dilated = build_model(small_cfg(head={"kernel_sizes": [3, 3], "dilations": [1, 2]}))
    assert dilated.head.stacks["rgb"]["blocks"][0].branches[1][1][0].dilation == (2,)
    with torch.no_grad():
        assert model(clip(b=1, t=6)).shape == (1, 5)
