"""Whole-video sampling: segment positions, flow stacks, short videos, reproducibility."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stfn.data.sampling import flow_stack, sample_clip, segment_positions


def test_test_positions_are_segment_centres():
    assert segment_positions(100, 4, train=False) == [12, 37, 62, 87]
    assert segment_positions(164, 8, train=False) == [10, 30, 51, 71, 92, 112, 133, 153]
    assert segment_positions(25, 25, train=False) == list(range(25))
    assert segment_positions(1, 3, train=False) == [0, 0, 0]
    assert segment_positions(5, 8, train=False) == [0, 0, 1, 2, 2, 3, 4, 4]  # N < T: repeats, in order


def test_train_positions_fall_in_their_segment_and_cover_it():
    n, t = 100, 4
    g = torch.Generator().manual_seed(0)
    seen = [set() for _ in range(t)]
    for _ in range(2000):
        pos = segment_positions(n, t, train=True, generator=g)
        for i, p in enumerate(pos):
            assert i * n // t <= p < (i + 1) * n // t
            seen[i].add(p)
    assert all(len(s) == n // t for s in seen)  # every frame of every segment gets drawn


def test_train_positions_reproducible_by_seed():
    a = [segment_positions(300, 8, True, torch.Generator().manual_seed(7)) for _ in range(2)]
    b = segment_positions(300, 8, True, torch.Generator().manual_seed(8))
    assert a[0] == a[1] and a[0] != b


def test_flow_stack_centred_then_clamped():
    # L = 5 fields centred on frame p: start p - 2
    assert flow_stack(50, 163, 5) == [48, 49, 50, 51, 52]
    assert flow_stack(0, 163, 5) == [0, 1, 2, 3, 4]  # near the start: shifted right
    assert flow_stack(163, 163, 5) == [158, 159, 160, 161, 162]  # last frame: last 5 fields
    assert flow_stack(10, 163, 1) == [10]
    assert flow_stack(10, 163, 2) == [9, 10]  # frames 9 -> 10 -> 11: centred on frame 10
    assert flow_stack(50, 163, 10) == list(range(45, 55))  # L = 10 (TSN): frames 45 .. 55, centre 50
    # short videos: repeat the last field; no flow at all: empty
    assert flow_stack(1, 3, 5) == [0, 1, 2, 2, 2]
    assert flow_stack(0, 1, 3) == [0, 0, 0]
    assert flow_stack(0, 0, 5) == []
    with pytest.raises(ValueError):
        flow_stack(0, 10, 0)


def test_sample_clip_aligns_rgb_and_flow():
    clip = sample_clip(164, 163, 8, 5, train=False)
    assert clip.rgb == clip.positions == segment_positions(164, 8, False)
    for p, stack in zip(clip.positions, clip.flow, strict=True):
        assert stack == list(range(stack[0], stack[0] + 5))
        assert stack[0] <= p <= stack[-1] + 1  # the stack's motion spans the RGB frame


def test_invalid_counts():
    with pytest.raises(ValueError, match="at least one frame"):
        segment_positions(0, 4, False)
    with pytest.raises(ValueError, match="at least 1"):
        segment_positions(10, 0, False)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 400), t=st.integers(1, 40), length=st.integers(1, 12), train=st.booleans(),
       seed=st.integers(0, 2**31), short_flow=st.integers(0, 2))
def test_property_indices_always_valid(n, t, length, train, seed, short_flow):
    flows = max(n - 1 - short_flow, 0)  # normally N - 1; also fewer
    clip = sample_clip(n, flows, t, length, train, torch.Generator().manual_seed(seed))
    assert len(clip.positions) == len(clip.rgb) == len(clip.flow) == t
    assert all(0 <= p < n for p in clip.rgb)
    assert clip.positions == sorted(clip.positions)
    for stack in clip.flow:
        if flows == 0:
            assert stack == []
            continue
        assert len(stack) == length and all(0 <= k < flows for k in stack)
        steps = [b - a for a, b in zip(stack, stack[1:], strict=False)]
        assert all(s in (0, 1) for s in steps)  # consecutive fields, repeats only at the end
        if flows >= length:
            assert all(s == 1 for s in steps)
        else:
            assert stack[: flows] == list(range(flows)) and set(stack[flows:]) <= {flows - 1}


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 10])
def test_flow_stack_is_centred_on_its_frame_for_even_and_odd_lengths(length: int) -> None:
    """Field k spans frames k .. k + 1, so a stack of fields a .. a + L - 1 spans frames a .. a + L and
    its centre is a + L / 2: frame p for even L, the middle of field p (p + 1/2) for odd L."""
    for p in range(20, 40):
        stack = flow_stack(p, 163, length)
        centre = (stack[0] + stack[-1] + 1) / 2
        assert centre == (p if length % 2 == 0 else p + 0.5), (p, stack)
