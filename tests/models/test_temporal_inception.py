"""Temporal-Inception (Ma et al. 2017) against the authors' Torch7 model-Conv-Inception-v1.lua: layer
sizes and parameter counts at their sizes (D = 2 x 2048, T = 25, 101 classes), the temporal schedule
(25 -> 12 -> 6 -> 3 -> 1 and the rule for other T), row-wise filtering, Torch7's dropout and init, and
that it learns a task only the frame order solves."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stfn.config import load_config
from stfn.models import build_model
from stfn.models.info import model_summary
from stfn.models.temporal_inception import (
    TemporalInceptionHead,
    TemporalInceptionModule,
    Torch7SpatialDropout,
)
from suite_helpers import fit_and_score

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "temporal_inception_resnet50.yaml"


def feats(b=2, t=25, c=3, seed=0, streams=("rgb", "flow")):
    g = torch.Generator().manual_seed(seed)
    return {f"{s}_feat": torch.randn(b, t, c, generator=g) for s in streams}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(c_in: int, c_out: int, k: int) -> int:
    """Parameters of the Lua's SpatialConvolutionMM(c_in, c_out, k, 1) (bias) + SpatialBatchNormalization(c_out)."""
    return c_in * c_out * k + c_out + 2 * c_out


def test_layers_and_parameters_at_the_reference_sizes():
    head = TemporalInceptionHead(2048, 101, ["rgb", "flow"])
    # model-Conv-Inception-v1.lua: nstate_CNN_1..4 = 1, 2, 4, 8 per branch, convsize {5, 7}
    assert [[n_params(b) for b in m.branches] for m in head.inception] == [
        [conv(1, 1, 5), conv(1, 1, 7)], [conv(2, 2, 5), conv(2, 2, 7)],
        [conv(4, 4, 5), conv(4, 4, 7)], [conv(8, 8, 5), conv(8, 8, 7)]]
    assert [[n_params(b) for b in m.branches] for m in head.inception] == [[8, 10], [26, 34], [92, 124], [344, 472]]
    for m, c_in in zip(head.inception, (1, 2, 4, 8), strict=True):
        for b, k in zip(m.branches, (5, 7), strict=True):
            c = b[0]
            assert (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) == (c_in, c_in, (1, k), (1, 1),
                                                                                          (0, (k - 1) // 2))
            assert isinstance(b[1], nn.BatchNorm2d) and isinstance(b[2], nn.ReLU)
    # stage 2: 1x1 convs 16 -> 4 -> 2 -> 1, each + BN + ReLU
    assert [(b[0].in_channels, b[0].out_channels, b[0].kernel_size) for b in head.reduce] == [
        (16, 4, (1, 1)), (4, 2, (1, 1)), (2, 1, (1, 1))]
    assert [n_params(b) for b in head.reduce] == [conv(16, 4, 1), conv(4, 2, 1), conv(2, 1, 1)] == [76, 14, 5]
    # stage 3: Linear(4096 * 1, 1024) + BatchNormalization(1024) + ReLU, Dropout, Linear(1024, 101)
    lin, bn = head.fc1[0], head.fc1[1]
    assert (lin.in_features, lin.out_features, n_params(lin)) == (4096, 1024, 4096 * 1024 + 1024)
    assert isinstance(bn, nn.BatchNorm1d) and n_params(bn) == 2048
    assert (head.fc.in_features, head.fc.out_features, n_params(head.fc)) == (1024, 101, 1024 * 101 + 101)
    assert n_params(head.inception) == 1110 and n_params(head.reduce) == 95
    assert n_params(head) == 1110 + 95 + 4_195_328 + 2048 + 103_525 == 4_302_106


def test_config_builds_the_reference_network_and_its_cost():
    cfg = load_config(CONFIG, ["model.pretrained=false"])
    assert cfg.model.arch == "temporal_inception" and cfg.data.frames == 25
    head = build_model(cfg.model, with_backbones=False).head
    assert isinstance(head, TemporalInceptionHead) and n_params(head) == 4_302_106
    assert head.drop_rows.p == head.drop.p == 0.2
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs, cfg.train.milestones) == (5e-5, 16, 30, [10, 20])
    info = model_summary(cfg.model, frames=25, size=32)
    # FLOPs (2 per multiply-add) of one video, as the flop counter sees what runs: each inception module is
    # one product (D, c * t) x (c * t, 2c * t) over all D = 4096 rows (its banded matrix, zeros included:
    # the convolutions' own count is 2 * c * c * 12 * D * t, 12 = 5 + 7 taps, 8% fewer in all), the
    # reduction's 1x1 convolutions run as convolutions
    d = 4096
    inception = sum(2 * d * (c * t) * (2 * c * t) for c, t in ((1, 25), (2, 12), (4, 6), (8, 3)))
    taps = sum(2 * c * c * 12 * d * t for c, t in ((1, 25), (2, 12), (4, 6), (8, 3)))
    assert inception == 38_551_552 and taps == 35_487_744
    reduce = 2 * (16 * 4 + 4 * 2 + 2 * 1) * d
    assert info["parts"]["head"]["flops"] == inception + reduce + 2 * d * 1024 + 2 * 1024 * 101 == 47_753_216


def _lengths(head: TemporalInceptionHead, f: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
    """(channels, T) after each inception module."""
    out: list[tuple[int, int]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, y: out.append((y.shape[1], y.shape[-1]))) for m in head.inception]
    with torch.no_grad():
        head(f)
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize("t, lengths, pools", [
    (25, [12, 6, 3, 1], [2, 2, 2, 3]),  # the Lua's schedule
    (16, [8, 4, 2, 1], [2, 2, 2, 2]),  # the demo's cached positions: the last pool takes the 2 left
    (8, [4, 2, 1, 1], [2, 2, 2, 1]),
    (1, [1, 1, 1, 1], [1, 1, 1, 1]),  # a length of 1 is not pooled
])
def test_temporal_schedule(t, lengths, pools):
    head = TemporalInceptionHead(3, 5, ["rgb", "flow"]).eval()
    f = feats(t=t)
    assert _lengths(head, f) == list(zip([2, 4, 8, 16], lengths, strict=True))
    assert [m.pool_size(n) for m, n in zip(head.inception, [t, *lengths[:3]], strict=True)] == pools
    with torch.no_grad():
        assert head.rows_in_time(f).shape == (2, 1, 6, 1)
        assert head(f).shape == (2, 5) and head(f, pre_logits=True).shape == (2, 1024)


def _reference_module(m: TemporalInceptionModule, x: torch.Tensor) -> torch.Tensor:
    """The module as the Lua writes it: each branch's ``nn.Conv2d`` + BN + ReLU, concatenated, max-pooled."""
    y = torch.cat([branch(x) for branch in m.branches], dim=1)
    k = m.pool_size(x.shape[-1])
    return F.max_pool2d(y, (1, k), (1, k)) if k > 1 else y


@pytest.mark.parametrize("t", [25, 8, 3, 1])
def test_matrix_product_modules_equal_the_convolutions(t):
    """Every inception module (one matrix product for both branches) gives the outputs, gradients and
    BatchNorm running statistics of its ``nn.Conv2d`` layers run as convolutions, in float64."""
    torch.manual_seed(0)
    head = TemporalInceptionHead(6, 5, ["rgb", "flow"]).double().train()
    x = torch.randn(3, 1, 12, t, dtype=torch.float64)
    for m in head.inception:
        ref = copy.deepcopy(m)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = m(xa), _reference_module(ref, xb)
        assert ya.shape == yb.shape and torch.allclose(ya, yb, rtol=0, atol=1e-12)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        assert torch.allclose(xa.grad, xb.grad, rtol=0, atol=1e-12)
        for pa, pb in zip(m.parameters(), ref.parameters(), strict=True):
            assert torch.allclose(pa.grad, pb.grad, rtol=0, atol=1e-10)
        for ba, bb in zip(m.buffers(), ref.buffers(), strict=True):
            assert torch.allclose(ba.double(), bb.double(), rtol=0, atol=1e-14)
        x = ya.detach()


def test_one_stream_has_d_equal_to_c():
    head = TemporalInceptionHead(7, 4, ["flow"]).eval()
    assert head.rows == 7 and head.fc1[0].in_features == 7
    with torch.no_grad():
        assert head(feats(c=7, t=16, streams=("flow",))).shape == (2, 4)
    head.reset_classifier(9)
    with torch.no_grad():
        assert head(feats(c=7, t=16, streams=("flow",))).shape == (2, 9)


def test_rows_are_filtered_alone_rgb_rows_first():
    """Before the FC every feature row is filtered in time by the same kernels and never meets another
    row: changing feature j of one stream changes row j (rgb) or C + j (flow) only."""
    c = 4
    head = TemporalInceptionHead(c, 3, ["rgb", "flow"]).eval()
    for m in head.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.bias)  # no ReLU of a fresh network is off, so every row shows its changes
    f = feats(b=8, t=25, c=c, seed=1)
    with torch.no_grad():
        base = head.rows_in_time(f)[:, 0, :, 0]
        for stream, offset in (("rgb", 0), ("flow", c)):
            for j in range(c):
                g = {k: v.clone() for k, v in f.items()}
                g[f"{stream}_feat"][:, :, j] += 3 * torch.randn(8, 25, generator=torch.Generator().manual_seed(j))
                changed = (head.rows_in_time(g)[:, 0, :, 0] != base).any(0)
                assert changed.nonzero().flatten().tolist() == [offset + j]


def test_torch7_spatial_dropout_drops_whole_samples_unscaled():
    drop = Torch7SpatialDropout(0.25).train()
    x = torch.rand(4000, 1, 6, 1) + 1.0
    torch.manual_seed(0)
    y = drop(x)
    kept = (y == x).all(dim=(1, 2, 3))
    dropped = (y == 0).all(dim=(1, 2, 3))
    assert bool((kept | dropped).all())  # a sample's whole vector, kept as it is (no 1 / (1 - p))
    assert abs(dropped.float().mean().item() - 0.25) < 0.03
    torch.testing.assert_close(drop.eval()(x), 0.75 * x)  # test time: times 1 - p


def test_torch7_initialisation():
    head = TemporalInceptionHead(16, 3, ["rgb", "flow"])
    bns = [m for m in head.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 4 * 2 + 3 + 1
    weights = torch.cat([m.weight.detach() for m in bns])
    assert bool(((weights >= 0) & (weights < 1)).all()) and weights.std() > 0.1  # U[0, 1), not PyTorch's 1
    assert all(bool((m.bias == 0).all()) for m in bns)
    for m in head.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = 1 / m.weight[0].numel() ** 0.5  # Torch7: U(+-1/sqrt(fan_in)), weights and biases
            assert m.weight.abs().max() <= bound and m.bias.abs().max() <= bound


def _ramp_task(n: int, seed: int, t: int = 16, c: int = 6):
    """The class is the direction in which the flow features drift over time (rgb: noise). Every clip of
    one class is a clip of the other played backwards, so only the frame order tells them apart."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-1, 1, t).view(1, t, 1)
    flow = torch.randn(n, 1, c, generator=g) + ramp * torch.rand(n, 1, c, generator=g) + 0.1 * torch.randn(n, t, c, generator=g)
    flow = torch.cat([flow, flow.flip(1)])
    rgb = torch.randn(2 * n, t, c, generator=g)
    return {"rgb_feat": rgb, "flow_feat": flow}, torch.cat([torch.zeros(n), torch.ones(n)]).long()


def test_learns_frame_order():
    torch.manual_seed(0)
    x, y = _ramp_task(128, seed=0)
    x_test, y_test = _ramp_task(64, seed=1)
    head = TemporalInceptionHead(6, 2, ["rgb", "flow"], dropout=0.0)
    acc = fit_and_score(head, x, y, x_test, y_test, lr=1e-2)
    assert acc > 0.9
