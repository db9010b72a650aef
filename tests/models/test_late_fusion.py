"""Late fusion of the streams' class scores (stfn.models.fusion.late_fusion): TSN's weighted logit sum by
default, the softmax mean as an option."""

from __future__ import annotations

import math

import pytest
import torch

from stfn.models.fusion import late_fusion


def test_softmax_rule_is_the_log_of_the_weighted_softmax_mean() -> None:
    rgb = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    flow = torch.tensor([[0.0, 3.0], [0.0, 0.0]])
    fused = late_fusion([rgb, flow], [1.0, 1.5], "softmax")
    p_rgb = [[math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)], [1 / (1 + math.e), math.e / (1 + math.e)]]
    p_flow = [[1 / (1 + math.exp(3)), math.exp(3) / (1 + math.exp(3))], [0.5, 0.5]]
    for i in range(2):
        for j in range(2):
            expected = (1.0 * p_rgb[i][j] + 1.5 * p_flow[i][j]) / 2.5
            assert fused[i, j].exp().item() == pytest.approx(expected, rel=1e-5)
    # the heavier flow weight wins video 0 (rgb says class 0, flow says class 1 more strongly)
    assert fused.argmax(1).tolist() == [1, 1]
    assert late_fusion([rgb, flow], [1.0, 0.0], "softmax").argmax(1).tolist() == rgb.argmax(1).tolist()
    with pytest.raises(ValueError):
        late_fusion([rgb], [1.0, 1.5])
    with pytest.raises(ValueError):
        late_fusion([rgb, flow], [1.0, -1.0])


def test_softmax_rule_is_finite_and_trainable() -> None:
    rgb = torch.tensor([[80.0, -80.0, 0.0]], requires_grad=True)
    flow = torch.tensor([[-80.0, 80.0, 0.0]])
    fused = late_fusion([rgb, flow], [1.0, 1.5], "softmax")
    assert torch.isfinite(fused).all()
    assert fused.exp().sum().item() == pytest.approx(1.0, rel=1e-6)  # a log-probability
    torch.nn.functional.cross_entropy(fused, torch.tensor([0])).backward()
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all()


def test_default_rule_is_tsns_weighted_sum_of_logits() -> None:
    """TSN's tools/eval_scores.py: final = sum_s w_s * consensus logits (no softmax), here divided by the
    sum of the weights. The hand case of the issue: rgb [10, 0, 0], flow [0, 3, 0], 1 : 1.5."""
    rgb, flow = torch.tensor([[10.0, 0.0, 0.0]]), torch.tensor([[0.0, 3.0, 0.0]])
    fused = late_fusion([rgb, flow], [1.0, 1.5])
    assert torch.allclose(fused, (1.0 * rgb + 1.5 * flow) / 2.5)  # [4, 1.8, 0]
    assert fused.argmax(1).tolist() == [0]  # TSN picks class 0 ...
    assert late_fusion([rgb, flow], [1.0, 1.5], "softmax").argmax(1).tolist() == [1]  # ... the softmax mean 1
    assert torch.equal(late_fusion([rgb, flow], [2.0, 0.0]), rgb)  # weight 0: that stream is ignored
    with pytest.raises(ValueError, match="fusion rule"):
        late_fusion([rgb, flow], [1.0, 1.5], "max")
