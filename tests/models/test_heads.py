"""Heads on per-frame features: STFN, TSN (consensus + score fusion), Temporal-Inception."""

from __future__ import annotations

import math

import pytest
import torch

from stfn.config import HeadConfig
from stfn.models.heads import STFNHead, TemporalInceptionHead, TemporalInceptionModule, TSNHead


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
