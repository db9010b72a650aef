"""Fusion operators and directions."""

from __future__ import annotations

import pytest
import torch

from stfn.models.fusion import DIRECTIONS, FUSION_OPS, ConcatFusion, FusionConnection, GatedFusion
from stfn.models.temporal import TemporalConv1d, to_reference


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 8, 5, generator=g), torch.randn(2, 8, 5, generator=g)


def test_operators(pair):
    a, m = pair
    torch.testing.assert_close(FUSION_OPS["sum"](8)(a, m), a + m)
    torch.testing.assert_close(FUSION_OPS["multiply"](8)(a, m), a * m)
    concat = ConcatFusion(8)
    torch.testing.assert_close(concat(a, m), a + m)  # [I, I] initialisation
    with torch.no_grad():
        concat.proj.weight.normal_()
    assert not torch.allclose(concat(a, m), a + m)
    gated = GatedFusion(8)
    out = gated(a, m)
    gate = torch.sigmoid(gated.gate(m))
    torch.testing.assert_close(out, a * gate)
    assert (out.abs() <= a.abs() + 1e-6).all()


@pytest.mark.parametrize("op", [k for k in FUSION_OPS if k != "none"])
def test_directions(op, pair):
    a, m = pair
    m2 = m + 1.0
    a2 = a + 1.0
    one_way = FusionConnection(op, "motion_to_appearance", 8)
    fa, fm = one_way(a, m)
    assert fm is m and fa.shape == a.shape
    assert not torch.allclose(one_way(a, m2)[0], fa)  # the motion stream reaches the appearance stream
    back = FusionConnection(op, "appearance_to_motion", 8)
    ba, bm = back(a, m)
    assert ba is a and not torch.allclose(back(a2, m)[1], bm)
    both = FusionConnection(op, "both", 8)
    both.into_motion.load_state_dict(both.into_appearance.state_dict())
    xa, xm = both(a, m)
    # symmetric: each side uses the other's pre-fusion features, so swapping inputs swaps outputs
    ya, ym = both(m, a)
    torch.testing.assert_close(xa, ym)
    torch.testing.assert_close(xm, ya)
    torch.testing.assert_close(xa, both.into_appearance(a, m))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_none_is_identity(direction, pair):
    a, m = pair
    conn = FusionConnection("none", direction, 8)
    assert conn(a, m) == (a, m)
    assert sum(p.numel() for p in conn.parameters()) == 0


def test_bad_names():
    with pytest.raises(ValueError, match="fusion must be one of"):
        FusionConnection("add", "both", 4)
    with pytest.raises(ValueError, match="direction"):
        FusionConnection("sum", "sideways", 4)


@pytest.mark.parametrize("op", ["concat", "gated"])
def test_learned_fusions_match_conv1d_and_keep_the_layout(op, pair):
    """Their 1x1 convolutions are TemporalConv1d: nn.Conv1d's parameters and result, stored as (B, T, C)."""
    a, m = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in pair)  # the heads' layout
    conn = FusionConnection(op, "both", 8)
    with torch.no_grad():
        for p in conn.parameters():
            p.normal_()
    ref = to_reference(conn)
    assert not any(isinstance(x, TemporalConv1d) for x in ref.modules())
    for fast_out, ref_out in zip(conn(a, m), ref(*pair), strict=True):
        torch.testing.assert_close(fast_out, ref_out)
        assert fast_out.transpose(1, 2).is_contiguous()
