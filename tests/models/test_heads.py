"""Heads on per-frame features: STFN, TSN (consensus + score fusion), Temporal-Inception."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from stfn.config import HeadConfig
from stfn.models.heads import STFNHead, TemporalInceptionHead, TemporalInceptionModule, TSNHead
from stfn.models.temporal import to_reference


def feats(b=2, t=8, c=24, seed=0, streams=("rgb", "flow")):
    g = torch.Generator().manual_seed(seed)
    return {f"{s}_feat": torch.randn(b, t, c, generator=g).relu() for s in streams}


@pytest.mark.parametrize("t", [1, 8, 25])
@pytest.mark.parametrize("place", ["each", "end"])
@pytest.mark.parametrize("pooling", ["avg", "max", "attention"])
def test_stfn_head_shapes(t, place, pooling):
    head = STFNHead(24, 7, ["rgb", "flow"], HeadConfig(hidden_dim=16, blocks=3, fusion_place=place, pooling=pooling))
    head.eval()
    with torch.no_grad():
        assert head(feats(t=t)).shape == (2, 7)
        assert head(feats(t=t), pre_logits=True).shape == (2, 32)
        assert {k: v.shape for k, v in head.stream_vectors(feats(t=t)).items()} == {
            "rgb": (2, 16), "flow": (2, 16)}


def test_stfn_fusion_places():
    each = STFNHead(24, 3, ["rgb", "flow"], HeadConfig(hidden_dim=8, blocks=3, fusion_place="each"))
    end = STFNHead(24, 3, ["rgb", "flow"], HeadConfig(hidden_dim=8, blocks=3, fusion_place="end", fusion="concat"))
    zero = STFNHead(24, 3, ["rgb", "flow"], HeadConfig(hidden_dim=8, blocks=0, fusion_place="each", fusion="gated"))
    assert each.fuse_after == {1, 2, 3} and set(each.fusions) == {"1", "2", "3"}
    assert end.fuse_after == {3} and set(end.fusions) == {"3"}
    assert zero.fuse_after == {0}
    with torch.no_grad():
        assert zero.eval()(feats(t=5)).shape == (2, 3)


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_stfn_single_stream_has_no_fusion(stream):
    head = STFNHead(24, 3, [stream], HeadConfig(hidden_dim=8, fusion="concat")).eval()
    assert len(head.fusions) == 0 and head.fc.in_features == 8
    with torch.no_grad():
        assert head(feats(streams=(stream,))).shape == (2, 3)


def test_stfn_head_is_order_sensitive_and_tsn_is_not():
    f = feats(t=8)
    rev = {k: v.flip(1) for k, v in f.items()}
    stfn = STFNHead(24, 5, ["rgb", "flow"], HeadConfig(hidden_dim=16)).eval()
    tsn = TSNHead(24, 5, ["rgb", "flow"], dropout=0.0).eval()
    with torch.no_grad():
        assert (stfn(f) - stfn(rev)).abs().max() > 1e-4
        torch.testing.assert_close(tsn(f), tsn(rev))


def test_tsn_score_fusion():
    head = TSNHead(24, 6, ["rgb", "flow"], dropout=0.0, fusion_weights={"rgb": 1.0, "flow": 1.5}).eval()
    f = feats(t=5)
    with torch.no_grad():
        logits = head.stream_logits(f)
        # average consensus of per-frame class scores
        per_frame = head.fcs["rgb"](f["rgb_feat"])
        torch.testing.assert_close(logits["rgb"], per_frame.mean(1))
        fused = head(f)
    scores = (1.0 * logits["rgb"].softmax(1) + 1.5 * logits["flow"].softmax(1)) / 2.5
    torch.testing.assert_close(fused.exp(), scores)  # log of the weighted mean of softmax scores
    torch.testing.assert_close(fused.softmax(1), scores)
    assert torch.equal(fused.argmax(1), scores.argmax(1))


def test_tsn_zero_weight_ignores_a_stream():
    head = TSNHead(24, 4, ["rgb", "flow"], dropout=0.0, fusion_weights={"rgb": 0.0, "flow": 2.0}).eval()
    f = feats(t=3)
    with torch.no_grad():
        torch.testing.assert_close(head(f), head.stream_logits(f)["flow"].log_softmax(1))


def test_tsn_single_stream_returns_its_logits():
    head = TSNHead(24, 4, ["flow"], dropout=0.0).eval()
    f = feats(streams=("flow",))
    with torch.no_grad():
        torch.testing.assert_close(head(f), head.stream_logits(f)["flow"])
    head.reset_classifier(9)
    assert head(f).shape == (2, 9)


@pytest.mark.parametrize("t, expected", [(25, [12, 6, 3, 1]), (8, [4, 2, 1, 1]), (1, [1, 1, 1, 1])])
def test_temporal_inception_pools_to_one(t, expected):
    x = torch.randn(2, 48, t)
    lengths = []
    mods = [TemporalInceptionModule(48 if i == 0 else 16, 16, (5, 7)).eval() for i in range(4)]
    with torch.no_grad():
        for m in mods:
            x = m(x)
            lengths.append(x.shape[-1])
    assert lengths == expected
    assert x.shape[1] == 16


@pytest.mark.parametrize("t", [1, 8, 25])
def test_temporal_inception_head(t):
    cfg = HeadConfig(hidden_dim=16, blocks=4, inception_kernels=[5, 7])
    head = TemporalInceptionHead(24, 5, ["rgb", "flow"], cfg).eval()
    assert head.inception[0].branches[0][0].in_channels == 48  # both streams stacked along channels
    assert [b[0].kernel_size[0] for b in head.inception[0].branches] == [5, 7]
    assert not hasattr(head.inception[0], "residual")
    with torch.no_grad():
        assert head(feats(t=t)).shape == (2, 5)
        assert head(feats(t=t), pre_logits=True).shape == (2, 16)


def test_reset_classifier():
    for head in (STFNHead(24, 5, ["rgb", "flow"], HeadConfig(hidden_dim=8)),
                 TemporalInceptionHead(24, 5, ["rgb"], HeadConfig(hidden_dim=8, blocks=1))):
        head.reset_classifier(11)
        with torch.no_grad():
            assert head.eval()(feats(streams=head.streams)).shape == (2, 11)


def test_tsn_log_mixture_is_stable_for_large_logits():
    head = TSNHead(4, 3, ["rgb", "flow"], dropout=0.0)
    with torch.no_grad():
        head.fcs["rgb"].weight.copy_(torch.tensor([[100.0], [0.0], [-100.0]]).expand(3, 4))
        head.fcs["flow"].weight.copy_(torch.tensor([[-100.0], [0.0], [100.0]]).expand(3, 4))
        out = head({"rgb_feat": torch.ones(1, 2, 4) * 10, "flow_feat": torch.ones(1, 2, 4) * 10})
    assert torch.isfinite(out).all()
    assert math.isclose(out.exp().sum().item(), 1.0, rel_tol=1e-5)


def _order_task(n: int, seed: int, t: int = 8, c: int = 16):
    """Class 0: a feature drifts along a fixed direction over time; class 1: the same frames reversed.
    Both classes have the same set of frames, so only the order tells them apart."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(1, 1, c, generator=torch.Generator().manual_seed(123))
    ramp = (torch.arange(t).float() - (t - 1) / 2).view(1, t, 1) / t
    x = torch.randn(n, 1, c, generator=g) + 2 * ramp * direction + 0.1 * torch.randn(n, t, c, generator=g)
    return torch.cat([x, x.flip(1)]), torch.cat([torch.zeros(n), torch.ones(n)]).long()


@pytest.mark.parametrize("name", ["stfn", "temporal_inception", "tsn"])
def test_temporal_heads_learn_frame_order_tsn_cannot(name):
    x, y = _order_task(128, seed=0)
    x_test, y_test = _order_task(64, seed=1)
    cfg = HeadConfig(hidden_dim=16, blocks=2, dropout=0.0)
    head = {"stfn": lambda: STFNHead(16, 2, ["rgb"], cfg),
            "temporal_inception": lambda: TemporalInceptionHead(16, 2, ["rgb"], cfg),
            "tsn": lambda: TSNHead(16, 2, ["rgb"], dropout=0.0)}[name]()
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    g = torch.Generator().manual_seed(0)
    head.train()
    for _ in range(60):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(head({"rgb_feat": x[idx]}), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (head.eval()({"rgb_feat": x_test}).argmax(1) == y_test).float().mean().item()
    if name == "tsn":
        assert acc == 0.5  # average consensus gives both orders the same scores: chance, by construction
    else:
        assert acc > 0.9


# ---------------------------------------------------------------- the fast layers change nothing

HEAD_CONFIGS = {
    "stfn default": ("stfn", {}),
    "stfn concat both attention dilated": ("stfn", {"fusion": "concat", "fusion_direction": "both", "pooling": "attention",
                                                    "kernel_sizes": [1, 3, 7], "dilations": [1, 2, 1], "blocks": 3}),
    "stfn gated end max flat": ("stfn", {"fusion": "gated", "fusion_place": "end", "pooling": "max",
                                         "pool_branch": False, "residual": False, "downsample": False}),
    "stfn multiply appearance_to_motion": ("stfn", {"fusion": "multiply", "fusion_direction": "appearance_to_motion"}),
    "temporal_inception": ("ti", {"blocks": 3}),
}


def _head(kind: str, cfg: HeadConfig, streams=("rgb", "flow")):
    cls = STFNHead if kind == "stfn" else TemporalInceptionHead
    return cls(24, 7, list(streams), cfg)


@pytest.mark.parametrize("name", list(HEAD_CONFIGS))
@pytest.mark.parametrize("t", [1, 8, 25])
def test_heads_match_pytorch_conv1d_layers(name, t):
    """Same logits, gradients (weights and input features) and BatchNorm statistics as the heads built
    from nn.Conv1d / BatchNorm1d / MaxPool1d (to_reference), in float64 to rounding."""
    kind, keys = HEAD_CONFIGS[name]
    fast = _head(kind, HeadConfig(hidden_dim=16, dropout=0.0, **keys)).double().train()
    ref = to_reference(fast)
    with torch.no_grad():
        for p in fast.parameters():  # away from the initial values (attention scorer at zero, [I, I], ...)
            p.add_(0.2 * torch.randn_like(p))
    ref.load_state_dict(fast.state_dict())
    f = {k: v.double().requires_grad_() for k, v in feats(b=3, t=t, seed=t).items()}
    outs = []
    for head in (fast, ref):
        for v in f.values():
            v.grad = None
        z = head(f)
        z.backward(torch.linspace(-1, 1, z.numel(), dtype=z.dtype).view_as(z))
        outs.append([z.detach(), *(v.grad for v in f.values()), *(p.grad for p in head.parameters()),
                     *head.buffers()])
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    fast.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(f), ref(f), rtol=1e-10, atol=1e-12)


def _signature(module) -> tuple[int, str]:
    items = sorted((k, tuple(v.shape)) for k, v in module.state_dict().items())
    return len(items), hashlib.sha256(repr(items).encode()).hexdigest()[:16]


@pytest.mark.parametrize("kind, keys, expected", [
    ("stfn", {}, (182, "fe5fd9f723ba21e8")),
    ("stfn", {"fusion": "concat", "fusion_direction": "both", "pooling": "attention", "kernel_sizes": [3, 5],
              "dilations": [1, 2]}, (170, "de486b1cc4ef384f")),
    ("stfn", {"fusion": "gated", "fusion_place": "end", "pool_branch": False, "blocks": 3}, (232, "efd9861f115080d1")),
    ("ti", {"blocks": 3}, (46, "a3b9cacde501b68d")),
])
def test_state_dict_keys_and_shapes_are_those_of_the_conv1d_heads(kind, keys, expected):
    """Checkpoints stay loadable: the expected values are the (key, shape) lists of the heads built from
    nn.Conv1d / BatchNorm1d / MaxPool1d (commit 8d94e9a), hashed."""
    assert _signature(_head(kind, HeadConfig(hidden_dim=16, **keys))) == expected


def test_forward_head_runs_the_head_in_float32_under_cpu_bf16_autocast():
    from stfn.config import ModelConfig
    from stfn.models import build_model

    net = build_model(ModelConfig(backbone="cnn_small", num_classes=5, head=HeadConfig(hidden_dim=16)),
                      with_backbones=False).eval()
    f = feats(c=net.feature_dim, t=6)
    with torch.no_grad():
        expected = net.forward_head(f)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net.forward_head({k: v.bfloat16() for k, v in f.items()})
            in_bf16 = net.head(f)
    assert out.dtype == torch.float32 and in_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2)  # only the bf16 rounding of the inputs
