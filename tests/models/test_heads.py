"""Heads on per-frame features: STFN (its stages), TSN (consensus + score fusion); Temporal-Inception's own
tests are in test_temporal_inception.py (it is here only in the frame-order task)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

from stfn.config import HeadConfig
from stfn.models.fusion import FusionConnection, late_fusion
from stfn.models.heads import Stage, STFNHead, TSNHead
from stfn.models.temporal import TemporalMaxPool1d, to_reference
from stfn.models.temporal_inception import TemporalInceptionHead
from suite_helpers import fit_and_score, order_task


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


def _fused_stages(head: STFNHead) -> list[int]:
    return [i for i, stage in enumerate(head.stages) if stage.fusion is not None]


def test_stfn_fusion_places():
    each = STFNHead(24, 3, ["rgb", "flow"], HeadConfig(hidden_dim=8, blocks=3, fusion_place="each"))
    end = STFNHead(24, 3, ["rgb", "flow"], HeadConfig(hidden_dim=8, blocks=3, fusion_place="end", fusion="concat"))
    zero = STFNHead(24, 3, ["rgb", "flow"], HeadConfig(hidden_dim=8, blocks=0, fusion_place="each", fusion="gated"))
    assert _fused_stages(each) == [1, 2, 3] and set(each.fusions) == {"1", "2", "3"}
    assert _fused_stages(end) == [3] and set(end.fusions) == {"3"}
    assert _fused_stages(zero) == [0] and set(zero.fusions) == {"0"}
    assert all(stage.fusion is end.fusions[str(i)] for i, stage in enumerate(end.stages) if stage.fusion)
    with torch.no_grad():
        assert zero.eval()(feats(t=5)).shape == (2, 3)


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_stfn_single_stream_has_no_fusion(stream):
    head = STFNHead(24, 3, [stream], HeadConfig(hidden_dim=8, fusion="concat")).eval()
    assert len(head.fusions) == 0 and head.fc.in_features == 8
    assert _fused_stages(head) == [] and all(list(stage.blocks) == [stream] for stage in head.stages)
    with torch.no_grad():
        assert head(feats(streams=(stream,))).shape == (2, 3)


@pytest.mark.parametrize("downsample", [True, False])
def test_stfn_stages_hold_the_registered_modules(downsample):
    """Stage 0: the input projections; stage i: block i of each stream, fusion i, max-pool /2 but after
    the last block. The modules are those the head registers (state_dict, .to(), to_reference)."""
    head = STFNHead(24, 3, ["rgb", "flow"], HeadConfig(hidden_dim=8, blocks=3, downsample=downsample))
    assert len(head.stages) == 4
    for module in (head, to_reference(head)):
        stacks = module.stacks
        assert all(module.stages[0].blocks[s] is stacks[s]["input_proj"] for s in ("rgb", "flow"))
        for i, stage in enumerate(module.stages[1:], 1):
            assert list(stage.blocks) == ["rgb", "flow"]
            assert all(stage.blocks[s] is stacks[s]["blocks"][i - 1] for s in ("rgb", "flow"))
        pooled = [i for i, stage in enumerate(module.stages) if stage.downsample is not None]
        assert pooled == ([1, 2] if downsample else [])
        assert all(module.stages[i].downsample is module.downsample for i in pooled)
    assert isinstance(to_reference(head).stages[1].downsample, nn.MaxPool1d if downsample else type(None))


def test_stage_runs_blocks_then_fusion_then_downsampling():
    a, m = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    stage = Stage({"rgb": nn.Identity(), "flow": nn.Tanh()}, FusionConnection("sum", "both", 4),
                  TemporalMaxPool1d(2, 2, ceil_mode=True))
    out = stage({"rgb": a, "flow": m})
    assert list(out) == ["rgb", "flow"]
    torch.testing.assert_close(out["rgb"], nn.functional.max_pool1d(a + m.tanh(), 2, 2, ceil_mode=True))
    torch.testing.assert_close(out["flow"], nn.functional.max_pool1d(m.tanh() + a, 2, 2, ceil_mode=True))
    assert out["rgb"].shape == (2, 4, 3)
    plain = Stage({"flow": nn.Tanh()}, None, None)({"flow": m})
    assert list(plain) == ["flow"] and torch.equal(plain["flow"], m.tanh())


@pytest.mark.parametrize("keys", [{"fusion": "gated", "fusion_direction": "both"},
                                  {"fusion": "concat", "fusion_place": "end", "pooling": "attention"},
                                  {"blocks": 0, "fusion": "sum"}, {"downsample": False, "blocks": 1}])
def test_stfn_head_is_its_parts_in_order(keys):
    """The head is: input projections, then per block: both streams' blocks, the fusion after that block,
    max-pool /2 but after the last block; pooling over T, concatenation, dropout, fc (bit for bit)."""
    cfg = HeadConfig(**{"hidden_dim": 8, "blocks": 3, "dropout": 0.0, **keys})
    head = STFNHead(24, 5, ["rgb", "flow"], cfg).train()
    f = feats(t=9)
    h = {s: head.stacks[s]["input_proj"](f[f"{s}_feat"].transpose(1, 2)) for s in ("rgb", "flow")}
    fuse = {int(i): fusion for i, fusion in head.fusions.items()}
    if 0 in fuse:
        h["rgb"], h["flow"] = fuse[0](h["rgb"], h["flow"])
    for i in range(cfg.blocks):
        h = {s: head.stacks[s]["blocks"][i](h[s]) for s in ("rgb", "flow")}
        if i + 1 in fuse:
            h["rgb"], h["flow"] = fuse[i + 1](h["rgb"], h["flow"])
        if cfg.downsample and i < cfg.blocks - 1:
            h = {s: nn.functional.max_pool1d(h[s], 2, 2, ceil_mode=True) for s in ("rgb", "flow")}
    expected = head.fc(torch.cat([head.pools[s](h[s]) for s in ("rgb", "flow")], dim=1))
    assert torch.equal(head(f), expected)


@pytest.mark.parametrize("t, expected", [(1, 1), (8, 2), (25, 7)])
def test_stfn_downsampling_lengths(t, expected):
    for downsample, length in ((True, expected), (False, t)):
        head = STFNHead(20, 3, ["rgb"], HeadConfig(hidden_dim=16, blocks=3, downsample=downsample)).eval()
        h = {"rgb": torch.randn(2, 20, t)}
        with torch.no_grad():
            for stage in head.stages:
                h = stage(h)
        assert h["rgb"].shape == (2, 16, length)


def test_stfn_parameter_order_is_per_stream_then_fusions_pools_fc():
    """Checkpoints (state_dict and optimiser state) and the order of the clip-norm sum depend on it."""
    head = STFNHead(24, 3, ["rgb", "flow"], HeadConfig(hidden_dim=8, blocks=2, fusion="gated", pooling="attention"))
    parts = [".".join(n.split(".")[:2]) for n, _ in head.named_parameters()]
    parts = [p for i, p in enumerate(parts) if i == 0 or parts[i - 1] != p]
    assert parts == ["stacks.rgb", "stacks.flow", "fusions.1", "fusions.2", "pools.rgb", "pools.flow", "fc.weight",
                     "fc.bias"]
    assert [n for n, _ in head.named_parameters()] == list(
        k for k in head.state_dict() if "running" not in k and "num_batches" not in k)


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
    # TSN's rule (tools/eval_scores.py): the weighted sum of the consensus logits, here / the sum of weights
    torch.testing.assert_close(fused, (1.0 * logits["rgb"] + 1.5 * logits["flow"]) / 2.5)
    head.fusion_rule = "softmax"  # the option: log of the weighted mean of softmax scores
    with torch.no_grad():
        fused = head(f)
    scores = (1.0 * logits["rgb"].softmax(1) + 1.5 * logits["flow"].softmax(1)) / 2.5
    torch.testing.assert_close(fused.exp(), scores)
    assert torch.equal(fused.argmax(1), scores.argmax(1))


def test_tsn_zero_weight_ignores_a_stream():
    head = TSNHead(24, 4, ["rgb", "flow"], dropout=0.0, fusion_weights={"rgb": 0.0, "flow": 2.0}).eval()
    f = feats(t=3)
    with torch.no_grad():
        torch.testing.assert_close(head(f), head.stream_logits(f)["flow"])


def test_tsn_fusion_is_late_fusion():
    head = TSNHead(24, 6, ["rgb", "flow"], dropout=0.0, fusion_weights={"rgb": 1.0, "flow": 1.5}).eval()
    f = feats(t=5)
    with torch.no_grad():
        logits = head.stream_logits(f)
        assert torch.equal(head(f), late_fusion([logits["rgb"], logits["flow"]], [1.0, 1.5]))


def test_tsn_single_stream_returns_its_logits():
    head = TSNHead(24, 4, ["flow"], dropout=0.0).eval()
    f = feats(streams=("flow",))
    with torch.no_grad():
        torch.testing.assert_close(head(f), head.stream_logits(f)["flow"])
    head.reset_classifier(9)
    assert head(f).shape == (2, 9)


def test_reset_classifier():
    for head in (STFNHead(24, 5, ["rgb", "flow"], HeadConfig(hidden_dim=8)), STFNHead(24, 5, ["rgb"])):
        head.reset_classifier(11)
        with torch.no_grad():
            assert head.eval()(feats(streams=head.streams)).shape == (2, 11)


def test_tsn_log_mixture_is_stable_for_large_logits():
    head = TSNHead(4, 3, ["rgb", "flow"], dropout=0.0, fusion_rule="softmax")
    with torch.no_grad():
        head.fcs["rgb"].weight.copy_(torch.tensor([[100.0], [0.0], [-100.0]]).expand(3, 4))
        head.fcs["flow"].weight.copy_(torch.tensor([[-100.0], [0.0], [100.0]]).expand(3, 4))
        out = head({"rgb_feat": torch.ones(1, 2, 4) * 10, "flow_feat": torch.ones(1, 2, 4) * 10})
    assert torch.isfinite(out).all()
    assert math.isclose(out.exp().sum().item(), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("name", ["stfn", "temporal_inception", "tsn"])
def test_temporal_heads_learn_frame_order_tsn_cannot(name):
    x, y = order_task(128, seed=0)
    x_test, y_test = order_task(64, seed=1)
    cfg = HeadConfig(hidden_dim=16, blocks=2, dropout=0.0)
    head = {"stfn": lambda: STFNHead(16, 2, ["rgb"], cfg),
            "temporal_inception": lambda: TemporalInceptionHead(16, 2, ["rgb"], dropout=0.0),
            "tsn": lambda: TSNHead(16, 2, ["rgb"], dropout=0.0)}[name]()
    acc = fit_and_score(head, {"rgb_feat": x}, y, {"rgb_feat": x_test}, y_test, lr=2e-2)
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
}


def _head(kind: str, cfg: HeadConfig, streams=("rgb", "flow")):
    assert kind == "stfn"
    return STFNHead(24, 7, list(streams), cfg)


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
])
def test_state_dict_keys_and_shapes_are_those_of_the_conv1d_heads(kind, keys, expected):
    """Checkpoints stay loadable: the expected values are the (key, shape) lists of the heads built from
    nn.Conv1d / BatchNorm1d / MaxPool1d (commit 8d94e9a), hashed."""
    assert _signature(_head(kind, HeadConfig(hidden_dim=16, **keys))) == expected


@pytest.mark.parametrize("native", [False, True])
def test_forward_head_under_cpu_bf16_autocast_is_bf16_only_where_the_cpu_has_it(native, monkeypatch):
    """Where bf16 is emulated (AVX2) the head runs in float32 under CPU bf16 autocast; where the CPU has
    it (AVX512-BF16, AMX) under the autocast. Either CPU kind is made up here, so the test runs on any."""
    from stfn.config import ModelConfig
    from stfn.models import build_model

    monkeypatch.setattr("stfn.runtime.cpu_supports_bf16", lambda: native)
    net = build_model(ModelConfig(backbone="cnn_small", num_classes=5, head=HeadConfig(hidden_dim=16)),
                      with_backbones=False).eval()
    f = feats(c=net.feature_dim, t=6)
    with torch.no_grad():
        expected = net.forward_head(f)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net.forward_head({k: v.bfloat16() for k, v in f.items()})
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    tol = 5e-2 if native else 1e-2  # bf16 arithmetic, or only the bf16 rounding of the inputs
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol)


def _ops(fn) -> set[str]:
    """Names of the aten operators ``fn`` runs (forward and backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    with Record() as rec:
        fn()
    return rec.names


def test_stfn_head_runs_matrix_products_not_convolutions():
    head = STFNHead(16, 3, ["rgb", "flow"], HeadConfig(hidden_dim=12, blocks=2, fusion="gated")).train()
    f = feats(t=7, c=16)
    ops = _ops(lambda: head(f).sum().backward())
    assert {"mm", "native_batch_norm", "max_pool2d_with_indices"} <= ops
    assert not {n for n in ops if "conv" in n or "max_pool1d" in n}
    ref_ops = _ops(lambda: to_reference(head)(f).sum().backward())
    assert "convolution" in ref_ops
