"""Residual Inception blocks and stacks, temporal pooling."""

from __future__ import annotations

import pytest
import torch

from stfn.models.temporal import (
    RESIDUAL_INIT_SCALE,
    ResidualInceptionBlock,
    ResidualInceptionStack,
    TemporalPool,
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


@pytest.mark.parametrize("t, expected", [(1, 1), (8, 2), (25, 7)])
def test_stack_downsampling_lengths(t, expected):
    stack = ResidualInceptionStack(20, 16, num_blocks=3, downsample=True).eval()
    with torch.no_grad():
        assert stack(torch.randn(2, 20, t)).shape == (2, 16, expected)
    flat = ResidualInceptionStack(20, 16, num_blocks=3, downsample=False).eval()
    with torch.no_grad():
        assert flat(torch.randn(2, 20, t)).shape == (2, 16, t)


def test_stack_with_zero_blocks_is_the_projection():
    stack = ResidualInceptionStack(20, 16, num_blocks=0).eval()
    x = torch.randn(2, 20, 5)
    with torch.no_grad():
        torch.testing.assert_close(stack(x), stack.input_proj(x))


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
