"""TLE (Diba et al. 2017): the Tensor Sketch, the segments, the normalisation, sizes, checkpoints, learning."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from stfn.config import ConfigError, ModelConfig, TLEConfig
from stfn.models import build_model
from stfn.models.fusion import late_fusion
from stfn.models.info import model_summary
from stfn.models.stfn import TSN, check_model_config
from stfn.models.tle import (
    TensorSketch,
    TLEHead,
    count_sketch,
    segment_positions,
    signed_sqrt,
    tensor_sketch,
)


def feats(b=2, t=3, c=16, seed=0, streams=("rgb", "flow")):
    g = torch.Generator().manual_seed(seed)
    return {f"{s}_feat": torch.rand(b, t, c, generator=g) for s in streams}


def hashes(c: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, d, (c,), generator=g), torch.randint(0, 2, (c,), generator=g) * 2.0 - 1,
            torch.randint(0, d, (c,), generator=g), torch.randint(0, 2, (c,), generator=g) * 2.0 - 1]


def test_count_sketch_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    h, s = torch.tensor([0, 2, 0, 1]), torch.tensor([1.0, -1.0, -1.0, 1.0])
    assert count_sketch(x, h, s, 3).tolist() == [[1.0 - 3.0, 4.0, -2.0]]


def test_tensor_sketch_is_the_count_sketch_of_the_outer_product():
    """TS(x) = CS(vec(x x^T)) with bins (h1[a] + h2[b]) mod d and signs s1[a] s2[b] (Pham & Pagh)."""
    c, d = 12, 16
    h1, s1, h2, s2 = hashes(c, d, seed=3)
    x = torch.randn(3, c, dtype=torch.float64)
    bins = ((h1[:, None] + h2[None, :]) % d).flatten()
    signs = (s1[:, None] * s2[None, :]).flatten().double()
    outer = (x[:, :, None] * x[:, None, :]).flatten(1)
    expected = torch.zeros(3, d, dtype=torch.float64).index_add_(1, bins, outer * signs)
    torch.testing.assert_close(tensor_sketch(x, h1, s1, h2, s2, d), expected, rtol=1e-10, atol=1e-10)


def test_tensor_sketch_inner_product_is_the_squared_inner_product_in_expectation():
    """Over 200 hash draws, mean <TS(x), TS(y)> = <x, y>^2 within 5% (the standard error is ~0.9%);
    the same test rejects a wrong sketch that reuses one hash for both factors (~2x <x, y>^2)."""
    c, d, draws = 64, 512, 200
    g = torch.Generator().manual_seed(0)
    x = torch.randn(c, generator=g)
    y = x + 0.5 * torch.randn(c, generator=g)  # cos(x, y) ~ 0.9
    z = torch.randn(c, generator=g)  # nearly orthogonal to x
    vecs = torch.stack([x, y, z])
    good, shared, ortho = [], [], []
    for r in range(draws):
        h1, s1, h2, s2 = hashes(c, d, seed=1000 + r)
        p = tensor_sketch(vecs, h1, s1, h2, s2, d)
        q = tensor_sketch(vecs, h1, s1, h1, s1, d)
        good.append(p[0] @ p[1])
        ortho.append(p[0] @ p[2])
        shared.append(q[0] @ q[1])
    target = float(x @ y) ** 2
    assert abs(torch.stack(good).mean().item() / target - 1) < 0.05
    assert abs(torch.stack(shared).mean().item() / target - 1) > 0.5
    scale = float(x @ x) * float(z @ z)  # the size of the products being estimated
    assert abs(torch.stack(ortho).mean().item() - float(x @ z) ** 2) < 0.01 * scale


def test_tensor_sketch_module_hashes_are_seeded_buffers():
    a, b, c = TensorSketch(32, 64, seed=1), TensorSketch(32, 64, seed=1), TensorSketch(32, 64, seed=2)
    for name in ("h1", "s1", "h2", "s2"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.h1, c.h1) and not torch.equal(a.h1, a.h2)
    assert a.h1.dtype == torch.long and 0 <= a.h1.min() and a.h1.max() < 64
    assert set(a.s1.unique().tolist()) == {-1.0, 1.0}
    assert list(a.state_dict()) == ["h1", "s1", "h2", "s2"] and not list(a.parameters())
    assert a.double().h1.dtype == torch.long  # dtype casts leave the bins alone


@pytest.mark.parametrize(("t", "groups"), [
    (1, [[0], [0], [0]]),
    (2, [[0], [1], [1]]),
    (3, [[0], [1], [2]]),
    (4, [[0], [1, 2], [3]]),
    (6, [[0, 1], [2, 3], [4, 5]]),
    (25, [list(range(0, 8)), list(range(8, 17)), list(range(17, 25))]),
])
def test_segment_positions(t, groups):
    assert [list(g) for g in segment_positions(t, 3)] == groups


def test_segment_positions_cover_every_position_once_when_t_at_least_k():
    for t in range(3, 40):
        for k in range(1, t + 1):
            flat = [p for g in segment_positions(t, k) for p in g]
            assert flat == list(range(t))
            assert {len(g) for g in segment_positions(t, k)} <= {t // k, -(-t // k)}


def _manual_encoding(head: TLEHead, x: torch.Tensor, stream: str) -> torch.Tensor:
    sk = head.sketches[stream]
    z = tensor_sketch(x, sk.h1, sk.s1, sk.h2, sk.s2, head.dim)
    return F.normalize(torch.sign(z) * z.abs().sqrt(), dim=-1)


def test_encoding_is_product_of_segments_sketched_signed_sqrt_l2():
    head = TLEHead(16, 5, ["rgb", "flow"], TLEConfig(dim=64)).eval()
    f = feats(t=3)
    v = head.encode(f)
    for s in ("rgb", "flow"):
        x = f[f"{s}_feat"]
        torch.testing.assert_close(v[s], _manual_encoding(head, x[:, 0] * x[:, 1] * x[:, 2], s))
        torch.testing.assert_close(v[s].norm(dim=-1), torch.ones(2))  # norm 1 before the classifier
        z = head.sketches[s](x.prod(dim=1))
        torch.testing.assert_close(v[s] ** 2, z.abs() / z.abs().sum(-1, keepdim=True))  # sqrt then L2
        assert (torch.sign(v[s]) == torch.sign(z)).all()
    # T = 6: each segment is the mean of its two positions
    f6 = feats(t=6, seed=1)
    x = f6["rgb_feat"]
    segs = x.view(2, 3, 2, 16).mean(dim=2)
    torch.testing.assert_close(head.encode(f6)["rgb"], _manual_encoding(head, segs.prod(dim=1), "rgb"))


def test_aggregations():
    f = feats(t=3)
    x = f["rgb_feat"]
    out = {}
    for agg in ("product", "sum", "max"):
        head = TLEHead(16, 5, ["rgb"], TLEConfig(dim=64, aggregation=agg)).eval()
        out[agg] = head.encode(f)["rgb"]
    torch.testing.assert_close(out["max"], _manual_encoding(head, x.amax(dim=1), "rgb"))
    torch.testing.assert_close(out["sum"], _manual_encoding(head, x.mean(dim=1), "rgb"))  # sum = average
    assert not torch.allclose(out["product"], out["sum"]) and not torch.allclose(out["product"], out["max"])


@pytest.mark.parametrize("t", [3, 6, 25])
def test_encoding_is_blind_to_temporal_order(t):
    """The segment aggregation is commutative and the segments are symmetric about the video's middle,
    so a reversed video gets the same encoding: TLE cannot tell a rising from a falling pattern."""
    head = TLEHead(16, 5, ["rgb"], TLEConfig(dim=64)).eval()
    f = feats(t=t, streams=("rgb",))
    torch.testing.assert_close(head.encode({"rgb_feat": f["rgb_feat"].flip(1)})["rgb"], head.encode(f)["rgb"])
    swap = torch.arange(t)
    swap[[t // 3 - 1, t // 3]] = swap[[t // 3, t // 3 - 1]]  # one position moved to the next segment
    moved = head.encode({"rgb_feat": f["rgb_feat"][:, swap]})["rgb"]
    assert torch.allclose(moved, head.encode(f)["rgb"]) == (t == 3)  # T = K: any order is the same product


def test_hash_buffers_are_saved_and_a_reloaded_head_gives_the_same_output():
    head = TLEHead(16, 5, ["rgb", "flow"], TLEConfig(dim=64, seed=1)).eval()
    state = head.state_dict()
    for s in ("rgb", "flow"):
        assert {f"sketches.{s}.{n}" for n in ("h1", "s1", "h2", "s2")} <= set(state)
    other = TLEHead(16, 5, ["rgb", "flow"], TLEConfig(dim=64, seed=7)).eval()
    f = feats(t=5)
    with torch.no_grad():
        assert not torch.allclose(other.encode(f)["rgb"], head.encode(f)["rgb"])
        other.load_state_dict(state)
        torch.testing.assert_close(other(f), head(f), rtol=0, atol=0)


def test_parameters_per_layer_and_total_at_reference_sizes():
    """C = 2048 (ResNet-50), T = 25, 101 classes, d = 8192: only the classifiers have parameters."""
    cfg = dataclasses.replace(ModelConfig(), arch="tle", backbone="resnet50", fusion_weights=[1.0, 1.0])
    model = build_model(cfg, with_backbones=False)
    assert isinstance(model, TSN) and isinstance(model.head, TLEHead) and model.feature_dim == 2048
    per_layer = {n: p.numel() for n, p in model.named_parameters()}
    assert per_layer == {"head.fcs.rgb.weight": 8192 * 101, "head.fcs.rgb.bias": 101,
                         "head.fcs.flow.weight": 8192 * 101, "head.fcs.flow.bias": 101}
    assert sum(per_layer.values()) == 1_654_986
    buffers = {n: b.numel() for n, b in model.named_buffers()}
    assert buffers == {f"head.sketches.{s}.{n}": 2048 for s in ("rgb", "flow") for n in ("h1", "s1", "h2", "s2")}
    with torch.no_grad():
        out = model({"rgb_feat": torch.rand(2, 25, 2048), "flow_feat": torch.rand(2, 25, 2048)})
    assert out.shape == (2, 101) and torch.isfinite(out).all()


def test_model_info_counts_the_head():
    """The FLOP counter sees the classifiers and the segment means, not the FFTs (see the config)."""
    cfg = dataclasses.replace(ModelConfig(), arch="tle", backbone="resnet50", pretrained=False)
    info = model_summary(cfg, frames=25, size=64)
    head = info["parts"]["head"]
    assert head["params"] == 1_654_986 and info["output_shape"] == [1, 101]
    assert head["flops"] == 2 * (2 * 8192 * 101 + 2 * 3 * 25 * 2048)


@pytest.mark.parametrize("t", [1, 2, 3, 25])
@pytest.mark.parametrize("streams", [("rgb", "flow"), ("rgb",), ("flow",)])
def test_output_shapes(t, streams):
    head = TLEHead(16, 7, list(streams), TLEConfig(dim=32)).eval()
    with torch.no_grad():
        f = feats(t=t, streams=streams)
        assert head(f).shape == (2, 7)
        assert {s: v.shape for s, v in head.encode(f).items()} == {s: (2, 32) for s in streams}
        assert {s: v.shape for s, v in head.stream_logits(f).items()} == {s: (2, 7) for s in streams}


def test_one_stream_and_two_stream_fusion():
    f = feats(t=4)
    one = TLEHead(16, 5, ["flow"], TLEConfig(dim=32)).eval()
    with torch.no_grad():
        torch.testing.assert_close(one({"flow_feat": f["flow_feat"]}), one.stream_logits(f)["flow"])
    two = TLEHead(16, 5, ["rgb", "flow"], TLEConfig(dim=32)).eval()  # default weights: the paper's average
    with torch.no_grad():
        per = two.stream_logits(f)
        torch.testing.assert_close(two(f), (per["rgb"] + per["flow"]) / 2)  # TSN's rule: mean of the logits
    two.fusion_rule = "softmax"
    with torch.no_grad():
        mean_score = (per["rgb"].softmax(-1) + per["flow"].softmax(-1)) / 2
        torch.testing.assert_close(two(f), mean_score.log())
    weighted = TLEHead(16, 5, ["rgb", "flow"], TLEConfig(dim=32), {"rgb": 1.0, "flow": 1.5}).eval()
    with torch.no_grad():
        per = weighted.stream_logits(f)
        torch.testing.assert_close(weighted(f), late_fusion([per["rgb"], per["flow"]], [1.0, 1.5]))


def test_reset_classifier():
    head = TLEHead(16, 5, ["rgb", "flow"], TLEConfig(dim=32))
    head.reset_classifier(9)
    assert head.fcs["rgb"].out_features == 9 and head.fcs["flow"].in_features == head.num_features == 32
    assert head.eval()(feats()).shape == (2, 9)


def test_gradient_reaches_the_features_and_is_bounded():
    f = {k: v.requires_grad_() for k, v in feats(t=6).items()}
    head = TLEHead(16, 5, ["rgb", "flow"], TLEConfig(dim=64))
    head(f).logsumexp(-1).sum().backward()
    for v in f.values():
        assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    x = torch.tensor([0.0, 4.0, -9.0], requires_grad=True)
    signed_sqrt(x).sum().backward()
    assert signed_sqrt(x).tolist() == [0.0, 2.0, -3.0]
    torch.testing.assert_close(x.grad, torch.tensor([5.0, 0.5 / 2.1, 0.5 / 3.1]))  # Gao's 0.5 / (sqrt|x| + 0.1)


def test_encoding_runs_in_float32_under_autocast():
    head = TLEHead(16, 5, ["rgb"], TLEConfig(dim=32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = head.encode({"rgb_feat": feats(streams=("rgb",))["rgb_feat"].bfloat16()})["rgb"]
    assert v.dtype == torch.float32
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(2))


def test_learns_a_tiny_task():
    """4 classes, each raising its own block of channels in every segment; only the classifiers learn."""
    g = torch.Generator().manual_seed(0)
    n, t, c, k = 64, 6, 16, 4
    labels = torch.arange(n) % k
    def sample():
        x = 0.5 + 0.2 * torch.rand(n, t, c, generator=g)
        for i, y in enumerate(labels):
            x[i, :, 4 * y : 4 * y + 4] += 1.0
        return {"rgb_feat": x, "flow_feat": x.flip(-1)}
    head = TLEHead(c, k, ["rgb", "flow"], TLEConfig(dim=128, dropout=0.0))
    opt = torch.optim.SGD(head.parameters(), lr=2.0, momentum=0.9)
    train = sample()
    for _ in range(60):
        loss = F.cross_entropy(head(train), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (head.eval()(sample()).argmax(-1) == labels).float().mean().item()
    assert loss.item() < 0.2 and acc == 1.0


def _check(**tle) -> None:
    check_model_config(dataclasses.replace(ModelConfig(), arch="tle", tle=TLEConfig(**tle)))


@pytest.mark.parametrize(("key", "value"), [("segments", 0), ("aggregation", "avg"), ("dim", 1), ("dropout", 1.0)])
def test_config_errors_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"model.tle.{key}"):
        _check(**{key: value})
    _check()  # the defaults are valid


def test_end_to_end_and_on_cached_features(small_cfg, clip):
    cfg = small_cfg(arch="tle", tle=TLEConfig(dim=64), freeze_backbone=True)
    model = build_model(cfg).eval()
    batch = clip(t=4)
    with torch.no_grad():
        out = model(batch)
        feats_ = model.forward_features(batch)
        cached = build_model(cfg, with_backbones=False).eval()
        cached.head.load_state_dict(model.head.state_dict())
        torch.testing.assert_close(cached(feats_), out)
    assert out.shape == (2, 5) and set(model.stream_logits(feats_)) == {"rgb", "flow"}
    assert not any(p.requires_grad for p in model.backbones.parameters())
    assert sum(p.numel() for p in model.head.parameters()) == 2 * (64 * 5 + 5)
