"""TS-LSTM head (Ma et al. 2017), pinned to the authors' Torch code (chihyaoma/Activity-Recognition-with-CNN-and-RNN,
RNN/model.lua, train.lua, main.lua; Element-Research rnn's nn.LSTM): sizes, schedule, forward, behaviour."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from stfn.cli import main
from stfn.config import ConfigError, ModelConfig, TSLSTMConfig, config_from_dict
from stfn.models import ARCHS, TSLSTMHead, TwoStreamNet, build_model, check_model_config
from stfn.models.heads import TSNHead
from stfn.models.ts_lstm import PeepholeLSTM, segment_bounds
from suite_helpers import fit_and_score, order_task

REPO = Path(__file__).resolve().parents[2]


def feats(b=3, t=25, c=16, seed=0, streams=("rgb", "flow")):
    g = torch.Generator().manual_seed(seed)
    return {f"{s}_feat": torch.randn(b, t, c, generator=g).relu() for s in streams}


def small(c=16, k=5, streams=("rgb", "flow"), **kw):
    return TSLSTMHead(c, k, list(streams), TSLSTMConfig(**{"hidden_sizes": [12], **kw}))


# ---------------------------------------------------------------- sizes at the reference's

def test_parameters_per_layer_at_reference_sizes():
    """C = 2048 per stream, two streams concatenated (4096), K = 3 segments, LSTM 512, 101 classes."""
    with torch.device("meta"):
        head = TSLSTMHead(2048, 101, ["rgb", "flow"])
    shapes = {n: tuple(p.shape) for n, p in head.named_parameters()}
    expected = {f"segment_bns.{k}.{w}": (4096,) for k in range(3) for w in ("weight", "bias")}
    expected |= {"lstms.0.peephole": (3, 512),  # nn.CMul(512) for the input, forget and output gates
                 "lstms.0.input2gates.weight": (4 * 512, 4096), "lstms.0.input2gates.bias": (4 * 512,),
                 "lstms.0.hidden2gates.weight": (4 * 512, 512),  # nn.LinearNoBias: no recurrent bias
                 "bn.weight": (512,), "bn.bias": (512,), "fc.weight": (101, 512), "fc.bias": (101,)}
    assert shapes == expected
    per_part = {}
    for n, p in head.named_parameters():
        per_part[n.rsplit(".", 1)[0]] = per_part.get(n.rsplit(".", 1)[0], 0) + p.numel()
    assert per_part == {"segment_bns.0": 8192, "segment_bns.1": 8192, "segment_bns.2": 8192, "lstms.0": 1536,
                        "lstms.0.input2gates": 8_390_656, "lstms.0.hidden2gates": 1_048_576, "bn": 1024,
                        "fc": 51_813}
    assert sum(p.numel() for p in head.parameters()) == 9_518_181
    assert head.num_features == 512 and not head.drop.p  # main.lua -dropout 0: no dropout
    assert [m.num_features for m in head.segment_bns] == [4096] * 3 and head.fc.in_features == 512


def test_head_flops_at_reference_sizes():
    """Matrix products only: 3 steps of 4096 -> 4x512 and 512 -> 4x512, then 512 -> 101 (2 FLOPs a MAC)."""
    with torch.device("meta"):
        head = TSLSTMHead(2048, 101, ["rgb", "flow"]).eval()
        f = {k: torch.zeros(1, 25, 2048) for k in ("rgb_feat", "flow_feat")}
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            out = head(f)
    assert out.shape == (1, 101)
    assert counter.get_total_flops() == 2 * (3 * 4096 * 2048 + 3 * 512 * 2048 + 512 * 101) == 56_726_528


def test_model_info_command(capsys):
    assert main(["model-info", "--config", str(REPO / "configs/ts_lstm_resnet50.yaml"), "--frames", "2",
                 "--size", "32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "ts_lstm" and info["output_shape"] == [1, 101]
    assert info["parts"]["head"] == {"params": 9_518_181, "trainable_params": 9_518_181, "flops": 56_726_528}
    assert info["trainable_params"] == 9_518_181  # frozen backbones


# ---------------------------------------------------------------- the temporal schedule

@pytest.mark.parametrize("t, segments, expected", [
    (25, 3, [(0, 8), (8, 16), (16, 24)]),  # the reference: frames 1-8, 9-16, 17-24; frame 25 unused
    (24, 3, [(0, 8), (8, 16), (16, 24)]),
    (8, 3, [(0, 2), (2, 4), (4, 6)]),
    (25, 1, [(0, 25)]),
    (3, 3, [(0, 1), (1, 2), (2, 3)]),
    (2, 3, [(0, 1), (0, 1), (1, 2)]),  # T < K: one frame each, floor(k T / K)
    (1, 3, [(0, 1)] * 3),
])
def test_segment_bounds(t, segments, expected):
    assert segment_bounds(t, segments) == expected


def test_segment_bounds_rejects_empty():
    with pytest.raises(ValueError):
        segment_bounds(0, 3)


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_gradient_reaches_exactly_the_scheduled_frames(pooling):
    head = small(c=64, pooling=pooling).train()
    f = {k: v.requires_grad_() for k, v in feats(b=4, t=25, c=64).items()}
    head(f).square().sum().backward()
    for v in f.values():
        used = v.grad.abs().sum(dim=(0, 2)) > 0
        assert used.tolist() == [True] * 24 + [False]


def test_segment_vectors_pool_each_segment_of_its_own_batch_norm():
    head = small(pooling="max").eval()
    with torch.no_grad():
        for bn in head.segment_bns:
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
        f = feats(t=25)
        x = torch.cat([f["rgb_feat"], f["flow_feat"]], dim=2)  # per frame: rgb then flow
        expected = torch.stack([head.segment_bns[k](x[:, 8 * k: 8 * k + 8].reshape(-1, 32)).view(3, 8, 32).amax(1)
                                for k in range(3)], dim=1)
        torch.testing.assert_close(head.segment_vectors(f), expected)


# ---------------------------------------------------------------- the forward, equation by equation

def _lstm_by_hand(lstm: PeepholeLSTM, x: torch.Tensor) -> torch.Tensor:
    """Element-Research rnn nn.LSTM: gates sigmoid(Linear(x) + LinearNoBias(h) + CMul(cell)), input and
    forget gates on c(t-1), output gate on c(t), hidden tanh(Linear(x) + LinearNoBias(h))."""
    n = lstm.hidden_size
    w, b, u, p = lstm.input2gates.weight, lstm.input2gates.bias, lstm.hidden2gates.weight, lstm.peephole
    lin = {g: (w[j * n:(j + 1) * n], b[j * n:(j + 1) * n], u[j * n:(j + 1) * n]) for j, g in enumerate("ifgo")}

    def pre(g, xt, h):
        return xt @ lin[g][0].T + lin[g][1] + h @ lin[g][2].T

    h = c = torch.zeros(x.shape[0], n, dtype=x.dtype)
    out = []
    for t in range(x.shape[1]):
        i = torch.sigmoid(pre("i", x[:, t], h) + p[0] * c)
        f = torch.sigmoid(pre("f", x[:, t], h) + p[1] * c)
        c = f * c + i * torch.tanh(pre("g", x[:, t], h))
        h = torch.sigmoid(pre("o", x[:, t], h) + p[2] * c) * torch.tanh(c)
        out.append(h)
    return torch.stack(out, 1)


def _bn_train(x: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias


def test_head_is_its_parts_in_order_in_training():
    """Per-frame concatenation, each frame position normalised with its own batch statistics (Torch's
    per-step BatchNormalization clones), max over the segment, stacked LSTMs, last output, BN, fc."""
    head = small(hidden_sizes=[12, 7]).double().train()
    f = {k: v.double() for k, v in feats(b=5, t=10).items()}
    x = torch.cat([f["rgb_feat"], f["flow_feat"]], dim=2)
    seg = [torch.stack([_bn_train(x[:, j], head.segment_bns[k]) for j in range(3 * k, 3 * k + 3)], 1).amax(1)
           for k in range(3)]  # T = 10, K = 3: frames [0, 3), [3, 6), [6, 9)
    h = _lstm_by_hand(head.lstms[1], _lstm_by_hand(head.lstms[0], torch.stack(seg, 1)))
    expected = head.fc(_bn_train(h[:, -1], head.bn))
    torch.testing.assert_close(head(f), expected, rtol=1e-12, atol=1e-12)
    assert [bn.num_batches_tracked.item() for bn in head.segment_bns] == [3, 3, 3]  # one update per position
    assert head.bn.num_batches_tracked.item() == 1


def test_peephole_lstm_without_peepholes_is_torch_lstm():
    cell = PeepholeLSTM(6, 5).double()
    ref = nn.LSTM(6, 5, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(cell.input2gates.weight)
        ref.bias_ih_l0.copy_(cell.input2gates.bias)
        ref.weight_hh_l0.copy_(cell.hidden2gates.weight)
        ref.bias_hh_l0.zero_()
        x = torch.randn(4, 3, 6, dtype=torch.float64)
        with_peepholes = cell(x)
        cell.peephole.zero_()
        torch.testing.assert_close(cell(x), ref(x)[0])
        assert (with_peepholes - cell(x)).abs().max() > 1e-3  # the peepholes are used


def test_initialisation_is_uniform_over_every_parameter():
    head = small(init_uniform=0.1)
    for name, p in head.named_parameters():
        assert p.abs().max() <= 0.1 and p.std() > 0.03, name  # BatchNorm's weight and bias too (param:uniform)
    default = small(init_uniform=0.0)
    assert torch.equal(default.bn.weight, torch.ones(12)) and torch.equal(default.segment_bns[0].bias, torch.zeros(32))
    head.reset_classifier(9)
    assert head.fc.out_features == 9 and head.fc.weight.abs().max() <= 0.1


# ---------------------------------------------------------------- shapes, one stream, batches of one

@pytest.mark.parametrize("t", [1, 2, 8, 25])
@pytest.mark.parametrize("streams", [("rgb", "flow"), ("rgb",), ("flow",)])
def test_output_shapes(t, streams):
    head = small(streams=streams)
    f = feats(t=t, streams=streams)
    assert head.segment_bns[0].num_features == 16 * len(streams)  # one stream: its 2048-d frames (main.lua)
    assert head.train()(f).shape == (3, 5)
    with torch.no_grad():
        assert head.eval()(f).shape == (3, 5)
        assert head(f, pre_logits=True).shape == (3, 12)
        assert head.segment_vectors(f).shape == (3, 3, 16 * len(streams))


def test_training_batch_of_one_uses_running_statistics():
    head = small().train()
    f = feats(b=1)
    before = [bn.running_mean.clone() for bn in head.segment_bns]
    out = head(f)
    assert torch.isfinite(out).all()
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(before, head.segment_bns, strict=True))
    with torch.no_grad():
        torch.testing.assert_close(out, head.eval()(f))


# ---------------------------------------------------------------- it models time

@pytest.mark.parametrize("name", ["ts_lstm", "tsn"])
def test_learns_frame_order_tsn_cannot(name):
    x, y = order_task(128, seed=0, t=9, c=8)
    x_test, y_test = order_task(64, seed=1, t=9, c=8)
    head = small(c=8, k=2, streams=("rgb",)) if name == "ts_lstm" else TSNHead(8, 2, ["rgb"], dropout=0.0)
    acc = fit_and_score(head, {"rgb_feat": x}, y, {"rgb_feat": x_test}, y_test, lr=2e-2)
    if name == "tsn":
        assert acc == 0.5  # average consensus gives both orders the same scores
    else:
        assert acc > 0.9


# ---------------------------------------------------------------- registry, config, both ways of running

def _cfg(**kw) -> ModelConfig:
    ts = TSLSTMConfig(hidden_sizes=[16])
    return dataclasses.replace(ModelConfig(), arch="ts_lstm", backbone="cnn_small", num_classes=5, flow_length=2,
                               ts_lstm=ts, **kw)


def test_registered_and_built_from_config():
    assert ARCHS["ts_lstm"][0] is TwoStreamNet
    net = build_model(_cfg(), with_backbones=False)
    assert isinstance(net.head, TSLSTMHead) and net.head.lstms[0].hidden_size == 16
    assert net.head.segment_bns[0].num_features == 2 * net.feature_dim
    cfg = config_from_dict({"model": {"arch": "ts_lstm", "ts_lstm": {"segments": 4, "pooling": "mean"}}})
    assert (cfg.model.ts_lstm.segments, cfg.model.ts_lstm.pooling, cfg.model.ts_lstm.hidden_sizes) == (4, "mean", [512])


def test_runs_end_to_end_and_on_cached_features(clip):
    net = build_model(_cfg(freeze_backbone=True)).train()
    batch = clip(b=3, t=4)
    net(batch).sum().backward()
    assert all(p.grad is None for p in net.backbones.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.head.parameters())
    net.eval()
    with torch.no_grad():
        cached = net.forward_features(batch)
        assert cached["rgb_feat"].shape == (3, 4, net.feature_dim)
        head_only = build_model(_cfg(freeze_backbone=True), with_backbones=False).eval()
        head_only.head.load_state_dict(net.head.state_dict())
        torch.testing.assert_close(head_only(cached), net(batch))


@pytest.mark.parametrize("key, value", [("segments", 0), ("pooling", "avg"), ("hidden_sizes", []),
                                        ("hidden_sizes", [512, 0]), ("dropout", 1.0), ("init_uniform", -0.1)])
def test_config_errors_name_the_key(key, value):
    cfg = _cfg()
    cfg.ts_lstm = dataclasses.replace(cfg.ts_lstm, **{key: value})
    with pytest.raises(ConfigError, match=f"'model.ts_lstm.{key}'"):
        check_model_config(cfg)
