"""Fusion connections between the appearance (RGB) and motion (flow) temporal streams.

An operator ``op(x, other) -> x'`` updates one stream's features ``x (B, C, T)`` with the other
stream's ``other (B, C, T)``; ``x'`` has the shape of ``x``. Chosen by name (``model.head.fusion``):

=========  ==========================================================================================
none       ``x`` (no connection)
sum        ``x + other`` (additive, as the residual connections of spatiotemporal ResNets)
multiply   ``x * other`` (multiplicative, as spatiotemporal multiplier networks)
concat     ``W [x; other] + b`` with a 1x1 conv ``2C -> C``, initialised to ``[I, I]`` (= sum at start)
gated      ``x * sigmoid(W other + b)``: the other stream gates each channel and time step
=========  ==========================================================================================

A :class:`FusionConnection` applies operators in a direction (``model.head.fusion_direction``):
``motion_to_appearance`` (flow updates RGB), ``appearance_to_motion`` or ``both``. With ``both`` each
stream is updated from the other's *pre-fusion* features, so the result does not depend on the order.

:func:`late_fusion` is the other kind: two-stream TSN's fusion of the streams' class scores
(``model.fusion_rule``: TSN's weighted sum of logits, or the softmax mean). It is the one
implementation: the TSN head, evaluation, ``stfn eval``'s fusion of two checkpoints and the study code
all call it.

The 1x1 convolutions are :class:`~stfn.models.temporal.TemporalConv1d` (``nn.Conv1d`` computed as a
matrix product on the ``(B, T, C)`` memory layout the heads use; see :mod:`stfn.models.temporal`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from stfn.models.temporal import TemporalConv1d, cat_channels

__all__ = [
    "DIRECTIONS",
    "FUSION_OPS",
    "ConcatFusion",
    "FusionConnection",
    "GatedFusion",
    "MultiplyFusion",
    "SumFusion",
    "FUSION_RULES",
    "fuse_stream_logits",
    "late_fusion",
]

DIRECTIONS = ("motion_to_appearance", "appearance_to_motion", "both")
FUSION_RULES = ("logits", "softmax")  # late fusion of class scores: TSN's weighted logit sum, or softmax mean


class SumFusion(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return x + other


class MultiplyFusion(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return x * other


class ConcatFusion(nn.Module):
    """``(B, C, T), (B, C, T) -> (B, C, T)``: concatenate, then a 1x1 conv initialised as ``[I, I]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = TemporalConv1d(2 * channels, channels, 1, bias=True)
        with torch.no_grad():
            eye = torch.eye(channels).unsqueeze(-1)
            self.proj.weight.copy_(torch.cat([eye, eye], dim=1))
            self.proj.bias.zero_()

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.proj(cat_channels([x, other]))


class GatedFusion(nn.Module):
    """``x * sigmoid(W other + b)`` with a 1x1 conv ``W``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = TemporalConv1d(channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate(other))


# The one place that maps `model.head.fusion` names to classes ("none" has no operator).
FUSION_OPS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "sum": SumFusion,
    "multiply": MultiplyFusion,
    "concat": ConcatFusion,
    "gated": GatedFusion,
}


class FusionConnection(nn.Module):
    """``(a, m) -> (a', m')`` for appearance ``a`` and motion ``m`` features, both ``(B, C, T)``."""

    def __init__(self, op: str, direction: str, channels: int) -> None:
        super().__init__()
        if op not in FUSION_OPS:
            raise ValueError(f"fusion must be one of {tuple(FUSION_OPS)}, got {op!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"fusion direction must be one of {DIRECTIONS}, got {direction!r}")
        self.op, self.direction = op, direction
        cls = FUSION_OPS[op]
        to_a = cls is not None and direction in ("motion_to_appearance", "both")
        to_m = cls is not None and direction in ("appearance_to_motion", "both")
        self.into_appearance = cls(channels) if to_a else None
        self.into_motion = cls(channels) if to_m else None

    def forward(self, a: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_new = self.into_appearance(a, m) if self.into_appearance is not None else a
        m_new = self.into_motion(m, a) if self.into_motion is not None else m
        return a_new, m_new

    def extra_repr(self) -> str:
        return f"op={self.op!r}, direction={self.direction!r}"


def late_fusion(logits: Sequence[torch.Tensor], weights: Sequence[float], rule: str = "logits") -> torch.Tensor:
    """Late fusion of per-stream class scores, each ``(N, K)`` logits, into fused logits ``(N, K)`` (float32).

    ``rule`` (:data:`FUSION_RULES`):

    - ``logits`` (default): TSN's rule, ``sum_s w_s l_s / sum_s w_s``: the weighted sum of the streams'
      consensus scores before softmax, as TSN's ``tools/eval_scores.py`` computes it (its default,
      without softmax), divided by the sum of the weights so that the fused logits keep the streams'
      scale (the ranking is TSN's);
    - ``softmax``: the weighted mean of the streams' softmax scores, returned as its log,
      ``log(sum_s w_s softmax(l_s) / sum_s w_s)`` (MMAction2's ``--apply-softmax``).

    The rules rank differently: rgb ``[10, 0, 0]`` and flow ``[0, 3, 0]`` with weights 1 : 1.5 give
    class 0 by ``logits`` and class 1 by ``softmax``. Both results are valid logits (trainable with
    cross-entropy). A stream of weight 0 is ignored. Raises ``ValueError`` for a count mismatch,
    weights that are negative or sum to 0, or an unknown rule.
    """
    if rule not in FUSION_RULES:
        raise ValueError(f"fusion rule must be one of {', '.join(FUSION_RULES)}, got {rule!r}")
    if len(logits) != len(weights):
        raise ValueError(f"{len(logits)} score sets but {len(weights)} fusion weights")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"fusion weights must be >= 0 with a positive sum, got {list(weights)}")
    kept = [(x.float(), float(w) / total) for x, w in zip(logits, weights, strict=True) if w > 0]
    if rule == "logits":
        return sum(w * x for x, w in kept)
    return torch.logsumexp(torch.stack([torch.log_softmax(x, dim=-1) + math.log(w) for x, w in kept]), dim=0)


def fuse_stream_logits(logits: dict[str, torch.Tensor], weights: dict[str, float], rule: str = "logits") -> torch.Tensor:
    """A late-fusion head's output ``(B, K)``: the one stream's logits, or :func:`late_fusion` of the
    streams' ``{stream: (B, K)}`` with ``weights[stream]`` (in the order of ``logits``)."""
    if len(logits) == 1:
        return next(iter(logits.values()))
    return late_fusion(list(logits.values()), [weights[s] for s in logits], rule)
