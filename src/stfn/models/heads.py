"""Heads: from per-frame features ``{"rgb_feat": (B, T, C), "flow_feat": (B, T, C)}`` to logits ``(B, K)``.

- :class:`STFNHead`: :class:`Stage` s of Residual Inception blocks, one per stream, with fusion
  connections between the streams; temporal aggregation, concatenation of the streams' video vectors,
  dropout, linear classifier.
- :class:`TSNHead`: per stream dropout + linear classifier on every frame, average consensus over
  ``T``, weighted late fusion of the streams' scores (TSN's weighted logit sum by default).

Temporal-Inception (Ma et al. 2017) is in :mod:`stfn.models.temporal_inception`.

Every head takes only the streams it was built for; the order of streams is always rgb, flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from stfn.config import HeadConfig
from stfn.models.fusion import FusionConnection, fuse_stream_logits
from stfn.models.temporal import (
    ResidualInceptionBlock,
    TemporalMaxPool1d,
    TemporalPool,
    conv_bn_relu,
)

__all__ = ["STFNHead", "Stage", "TSNHead"]


def _sequence(features: dict[str, torch.Tensor], stream: str) -> torch.Tensor:
    """``features[stream_feat]`` ``(B, T, C)`` as a channels-first sequence ``(B, C, T)`` (a view: the
    temporal layers compute on the ``(B, T, C)`` memory layout, see :mod:`stfn.models.temporal`)."""
    return features[f"{stream}_feat"].transpose(1, 2)


def _dilations(cfg: HeadConfig) -> list[int]:
    # A list of ones of any length means "no dilation", so kernel_sizes can change on its own.
    return [1] * len(cfg.kernel_sizes) if all(d == 1 for d in cfg.dilations) else list(cfg.dilations)


@dataclass(frozen=True, eq=False)
class Stage:
    """One stage of :class:`STFNHead`: ``{stream: (B, C_in, T)} -> {stream: (B, H, T')}``.

    Each stream's ``blocks[stream]`` ``(B, C_in, T) -> (B, H, T)``, then the ``fusion`` connection of the
    two streams (``None``: no connection), then ``downsample`` on each stream ``(B, H, T) -> (B, H, T')``
    (``None``: ``T' = T``). The modules are the head's, registered there (a stage holds references).
    """

    blocks: dict[str, nn.Module]
    fusion: FusionConnection | None
    downsample: nn.Module | None

    def __call__(self, h: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = {s: block(h[s]) for s, block in self.blocks.items()}
        if self.fusion is not None:
            h["rgb"], h["flow"] = self.fusion(h["rgb"], h["flow"])
        if self.downsample is not None:
            h = {s: self.downsample(x) for s, x in h.items()}
        return h


def _stack(in_dim: int, cfg: HeadConfig) -> nn.ModuleDict:
    """One stream's temporal modules, created in this order: ``input_proj`` (1x1 conv + BN + ReLU,
    ``C -> H``) and ``blocks`` (``cfg.blocks`` :class:`ResidualInceptionBlock` s on ``(B, H, T)``)."""
    input_proj = conv_bn_relu(in_dim, cfg.hidden_dim)
    blocks = nn.ModuleList(
        ResidualInceptionBlock(cfg.hidden_dim, cfg.kernel_sizes, _dilations(cfg), cfg.pool_branch, cfg.residual)
        for _ in range(cfg.blocks)
    )
    return nn.ModuleDict({"input_proj": input_proj, "blocks": blocks})


class STFNHead(nn.Module):
    """Spatio-Temporal Fusion head: ``{"rgb_feat": (B, T, C), "flow_feat": (B, T, C)} -> (B, K)``.

    A loop over :attr:`stages` (``N = cfg.blocks``, ``H = cfg.hidden_dim``), temporal aggregation per
    stream (``cfg.pooling``), concatenation of the streams' video vectors, dropout, linear classifier::

          rgb_feat (B, T, C)              flow_feat (B, T, C)      viewed as (B, C, T)
                 |                               |
        +--------|---------- stage 0 ------------|--------+
        |   input_proj 1x1                input_proj 1x1  |    C -> H
        |        +------ fusion 0 (if N = 0) ----+        |
        +--------|-------------------------------|--------+
                 |                               |
        +--------|-------- stage i = 1..N -------|--------+
        |    RI block i                     RI block i    |    (B, H, T) -> (B, H, T)
        |        +---------- fusion i -----------+        |    each: every i; end: i = N only
        |    max-pool /2                   max-pool /2    |    i < N, with cfg.downsample
        +--------|-------------------------------|--------+
                 |                               |
          pool over T (B, H)              pool over T (B, H)
                 +------- concat (B, 2H) --------+--> dropout --> fc --> (B, K)

    A fusion connection is a :class:`FusionConnection` (``cfg.fusion``, ``cfg.fusion_direction``);
    the max-pool has kernel 2, stride 2 and ceil mode (``T -> ceil(T / 2)``). With a single stream
    there is no fusion and the video vector is ``(B, H)``.

    The modules are registered per stream (``stacks[stream]["input_proj"]``, ``...["blocks"][i - 1]``),
    then ``fusions[str(i)]``, ``pools[stream]``, ``fc``: the state_dict keys and the parameter order
    (checkpoints, optimiser state, the order of the gradient-norm sum) of earlier versions, which
    registered stages would change. So :attr:`stages` is a plain list of :class:`Stage` s that hold
    these modules.
    """

    def __init__(self, in_dim: int, num_classes: int, streams: Sequence[str], cfg: HeadConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or HeadConfig()
        self.streams = list(streams)
        self.stacks = nn.ModuleDict({s: _stack(in_dim, cfg) for s in self.streams})
        self.downsample = TemporalMaxPool1d(2, 2, ceil_mode=True) if cfg.downsample else None
        if cfg.blocks == 0:
            fuse_after = [0]  # fuse the projected frame features
        else:
            fuse_after = list(range(1, cfg.blocks + 1)) if cfg.fusion_place == "each" else [cfg.blocks]
        self.fusions = nn.ModuleDict()  # after stage i (as a string key); none with one stream
        if len(self.streams) == 2 and cfg.fusion != "none":
            for i in fuse_after:
                self.fusions[str(i)] = FusionConnection(cfg.fusion, cfg.fusion_direction, cfg.hidden_dim)
        self.pools = nn.ModuleDict({s: TemporalPool(cfg.hidden_dim, cfg.pooling) for s in self.streams})
        self.num_features = cfg.hidden_dim * len(self.streams)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.stages = [self._stage(i, cfg.blocks) for i in range(cfg.blocks + 1)]

    def _stage(self, i: int, num_blocks: int) -> Stage:
        """Stage ``i``: the input projections (``i = 0``) or block ``i``; fusion ``i``; downsampling
        after every block but the last."""
        if i == 0:
            blocks = {s: self.stacks[s]["input_proj"] for s in self.streams}
        else:
            blocks = {s: self.stacks[s]["blocks"][i - 1] for s in self.streams}
        fusion = self.fusions[str(i)] if str(i) in self.fusions else None
        return Stage(blocks, fusion, self.downsample if 0 < i < num_blocks else None)

    def stream_vectors(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each stream's video-level vector after temporal modelling and fusion: ``{stream: (B, H)}``."""
        h = {s: _sequence(features, s) for s in self.streams}
        for stage in self.stages:
            h = stage(h)
        return {s: self.pools[s](h[s]) for s in self.streams}

    def forward(self, features: dict[str, torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        """``(B, S*H)`` video vector with ``pre_logits``, else logits ``(B, num_classes)``."""
        v = self.stream_vectors(features)
        x = torch.cat([v[s] for s in self.streams], dim=1)
        return x if pre_logits else self.fc(self.drop(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)


class TSNHead(nn.Module):
    """Temporal Segment Networks: per-frame classification, average consensus, weighted score fusion.

    ``stream_logits``: per stream ``dropout -> fc`` on every frame ``(B, T, K)``, averaged over ``T``
    (the consensus, before softmax). ``forward``: one stream -> its logits; two streams -> their
    :func:`~stfn.models.fusion.late_fusion` with ``fusion_weights`` (rgb 1 : flow 1.5) by ``fusion_rule``:
    ``logits`` (default) is TSN's own rule, the weighted sum of the streams' consensus logits
    (``tools/eval_scores.py`` of yjxiong/temporal-segment-networks), divided by the sum of the weights;
    ``softmax`` is the log of the weighted mean of softmax scores. Either can be trained with
    cross-entropy.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        streams: Sequence[str],
        dropout: float = 0.8,
        fusion_weights: dict[str, float] | None = None,
        fusion_rule: str = "logits",
    ) -> None:
        super().__init__()
        self.streams = list(streams)
        self.in_dim = in_dim
        self.fusion_rule = fusion_rule
        weights = fusion_weights or {"rgb": 1.0, "flow": 1.5}
        self.fusion_weights = {s: float(weights[s]) for s in self.streams}
        self.num_features = in_dim
        self.drop = nn.Dropout(dropout)
        self.fcs = nn.ModuleDict({s: nn.Linear(in_dim, num_classes) for s in self.streams})

    def stream_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{stream: (B, K)}``: per-frame logits averaged over time (average consensus)."""
        return {s: self.fcs[s](self.drop(features[f"{s}_feat"])).mean(dim=1) for s in self.streams}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, K)``: one stream's, or the :func:`late_fusion` of two streams' (float32)."""
        return fuse_stream_logits(self.stream_logits(features), self.fusion_weights, self.fusion_rule)

    def reset_classifier(self, num_classes: int) -> None:
        self.fcs = nn.ModuleDict({s: nn.Linear(self.in_dim, num_classes) for s in self.streams})
