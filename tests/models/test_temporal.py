"""Residual Inception blocks, temporal pooling, and the fast layers they are built from (the stacks of
blocks are the STFN head's stages: tests/models/test_heads.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stfn.models.temporal import (
    RESIDUAL_INIT_SCALE,
    ResidualInceptionBlock,
    TemporalBatchNorm1d,
    TemporalConv1d,
    TemporalMaxPool1d,
    TemporalPool,
    cat_channels,
    to_reference,
)


@pytest.mark.parametrize("t", [1, 2, 8, 25])
@pytest.mark.parametrize("residual", [True, False])
def test_block_keeps_shape_for_any_length(t, residual):
    block = ResidualInceptionBlock(16, kernel_sizes=(1, 3, 5), dilations=(1, 2, 3), residual=residual).eval()
    x = torch.randn(3, 16, t)
    with torch.no_grad():
        assert block(x).shape == (3, 16, t)


def test_block_branches_and_widths():
    block = ResidualInceptionBlock(32, kernel_sizes=(1, 3, 5, 7), pool_branch=True)
    assert len(block.branches) == 5
    assert block.project[0].in_channels == 5 * (32 // 5)
    assert len(ResidualInceptionBlock(32, kernel_sizes=(3,), pool_branch=False).branches) == 1


def test_fresh_residual_block_is_close_to_identity_but_not_equal():
    block = ResidualInceptionBlock(32).eval()
    x = torch.randn(4, 32, 10)
    with torch.no_grad():
        delta = block(x) - x
    assert torch.allclose(block.project[1].weight, torch.full((32,), RESIDUAL_INIT_SCALE))
    assert 0 < delta.abs().mean() < 0.5 * x.abs().mean()


def test_residual_shortcut_is_the_difference():
    torch.manual_seed(1)
    a = ResidualInceptionBlock(8, residual=True).eval()
    b = ResidualInceptionBlock(8, residual=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 8, 6)
    with torch.no_grad():
        torch.testing.assert_close(a(x), x + b(x))


def test_block_is_a_temporal_convolution():
    """A change at one time step moves outputs only within the receptive field (kernel 5 -> +-2, pool +-1)."""
    block = ResidualInceptionBlock(8, kernel_sizes=(1, 5), pool_branch=True).eval()
    x = torch.randn(1, 8, 20)
    y = x.clone()
    y[..., 10] += 5.0
    with torch.no_grad():
        changed = (block(x) - block(y)).abs().amax(dim=1)[0] > 1e-6
    assert changed[8:13].all()
    assert not changed[:8].any() and not changed[13:].any()


def test_even_kernel_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        ResidualInceptionBlock(8, kernel_sizes=(2,))


def test_pooling_modes():
    x = torch.randn(3, 4, 7)
    torch.testing.assert_close(TemporalPool(4, "avg")(x), x.mean(2))
    torch.testing.assert_close(TemporalPool(4, "max")(x), x.amax(2))
    att = TemporalPool(4, "attention")
    torch.testing.assert_close(att(x), x.mean(2))  # zero-initialised scorer = average pooling
    with torch.no_grad():
        att.score.weight.normal_()
    w = torch.softmax(att.score(x), dim=2)
    torch.testing.assert_close(w.sum(2), torch.ones(3, 1))
    out = att(x)
    assert not torch.allclose(out, x.mean(2))
    assert (out <= x.amax(2) + 1e-6).all() and (out >= x.amin(2) - 1e-6).all()
    with pytest.raises(ValueError, match="pooling"):
        TemporalPool(4, "median")


# ---------------------------------------------------------------- the fast layers against PyTorch's own


def _layouts(b: int, c: int, t: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The same float64 ``(B, C, T)`` values contiguous and as the heads store them (a view of (B, T, C))."""
    x = torch.randn(b, c, t, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return {"contiguous": x, "btc": x.transpose(1, 2).contiguous().transpose(1, 2)}


def _fwd_bwd(layer, x: torch.Tensor, seed: int = 1):
    """Output, input gradient and parameter gradients for a fixed random upstream gradient."""
    x = x.detach().requires_grad_()
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype))
    return y.detach(), x.grad, [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("k, d", [(1, 1), (3, 1), (5, 1), (3, 2), (5, 3), (7, 1)])
@pytest.mark.parametrize("t", [1, 2, 9])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "btc"])
@pytest.mark.parametrize("c_in, c_out", [(4, 6), (6, 5)])  # windows of the input / shifted outputs
def test_temporal_conv_is_conv1d(k, d, t, bias, layout, c_in, c_out):
    fast = TemporalConv1d(c_in, c_out, k, d, bias=bias).double()
    ref = nn.Conv1d(c_in, c_out, k, padding=d * (k - 1) // 2, dilation=d, bias=bias).double()
    ref.load_state_dict(fast.state_dict())
    x = _layouts(3, c_in, t)[layout]
    y, gx, gp = _fwd_bwd(fast, x)
    y_ref, gx_ref, gp_ref = _fwd_bwd(ref, x)
    assert y.shape == (3, c_out, t)
    assert y.transpose(1, 2).is_contiguous()  # stored as (B, T, C): the next layer needs no copy
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(gp, gp_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c_in, c_out", [(4, 6), (6, 5)])
@pytest.mark.filterwarnings("ignore:.*torch.jit.*is deprecated:FutureWarning")
@pytest.mark.filterwarnings("error::torch.jit.TracerWarning")
def test_temporal_conv_traces_to_the_same_function(c_in, c_out):
    """torch.jit.trace (and the ONNX export built on it) records plain slices instead of as_strided."""
    conv = TemporalConv1d(c_in, c_out, 5, 2, bias=True).eval()
    x = torch.randn(2, c_in, 9)
    with torch.no_grad():
        traced = torch.jit.trace(conv, x)
        x2 = torch.randn(3, c_in, 9)
        torch.testing.assert_close(traced(x2), conv(x2))
    assert "as_strided" not in str(traced.graph)


def test_temporal_conv_keeps_conv1d_parameters_and_init():
    torch.manual_seed(3)
    fast = TemporalConv1d(8, 4, 3, 2, bias=True)
    torch.manual_seed(3)
    ref = nn.Conv1d(8, 4, 3, padding=2, dilation=2)
    assert isinstance(fast, nn.Conv1d) and fast.dilation == (2,) and fast.padding == (2,)
    assert fast.state_dict().keys() == ref.state_dict().keys()
    for key, value in ref.state_dict().items():
        assert torch.equal(fast.state_dict()[key], value)  # same random initialisation
    with pytest.raises(ValueError, match="odd"):
        TemporalConv1d(4, 4, 4)


@pytest.mark.parametrize("layout", ["contiguous", "btc"])
def test_temporal_batchnorm_is_batchnorm1d(layout):
    fast, ref = TemporalBatchNorm1d(6).double(), nn.BatchNorm1d(6).double()
    with torch.no_grad():
        fast.weight.uniform_(0.5, 2.0)
        fast.bias.normal_()
    ref.load_state_dict(fast.state_dict())
    for seed in range(2):  # two training steps: running statistics follow the same updates
        x = _layouts(4, 6, 7, seed)[layout] * 3 + 1
        for a, b in zip(_fwd_bwd(fast, x), _fwd_bwd(ref, x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-12, atol=1e-12)
    assert fast.num_batches_tracked.item() == 2
    fast.eval(), ref.eval()
    x = _layouts(2, 6, 5, 7)[layout]
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-12, atol=1e-12)
    x2 = torch.randn(5, 6, dtype=torch.float64)  # (B, C) inputs as usual
    torch.testing.assert_close(fast(x2), ref(x2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding, ceil", [(3, 1, 1, False), (2, 2, 0, True), (2, 2, 0, False)])
@pytest.mark.parametrize("t", [1, 2, 3, 8, 25])
@pytest.mark.parametrize("layout", ["contiguous", "btc"])
def test_temporal_max_pool_is_max_pool1d_with_ties(kernel, stride, padding, ceil, t, layout):
    if t + 2 * padding < kernel and not ceil:
        pytest.skip("nn.MaxPool1d rejects this length too")
    fast = TemporalMaxPool1d(kernel, stride, padding, ceil_mode=ceil)
    ref = nn.MaxPool1d(kernel, stride, padding, ceil_mode=ceil)
    # small integers: many ties, so the gradient must go to the same (first) maximum as PyTorch's
    x = _layouts(2, 5, t)[layout].mul(1.5).round().clamp(-1, 1)
    y, gx, _ = _fwd_bwd(fast, x)
    y_ref, gx_ref, _ = _fwd_bwd(ref, x)
    assert y.shape == y_ref.shape
    assert torch.equal(y, y_ref) and torch.equal(gx, gx_ref)


def test_cat_channels_is_cat_and_keeps_the_layout():
    xs = [_layouts(2, c, 4, c)["btc"] for c in (3, 1, 5)]
    out = cat_channels(xs)
    assert torch.equal(out, torch.cat(xs, dim=1)) and out.transpose(1, 2).is_contiguous()


def test_to_reference_runs_pytorch_layers_with_the_same_weights():
    block = ResidualInceptionBlock(12, kernel_sizes=(1, 3), dilations=(1, 2)).train()
    ref = to_reference(block)
    kinds = {type(m) for m in ref.modules()}
    assert {nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d} <= kinds
    assert not kinds & {TemporalConv1d, TemporalBatchNorm1d, TemporalMaxPool1d}
    assert any(isinstance(m, TemporalConv1d) for m in block.modules())  # the original is untouched
    assert ref.state_dict().keys() == block.state_dict().keys()
    x = _layouts(3, 12, 9)["btc"].float()
    torch.testing.assert_close(block(x), ref(x), rtol=1e-5, atol=1e-5)
