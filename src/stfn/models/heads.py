"""Heads: from per-frame features ``{"rgb_feat": (B, T, C), "flow_feat": (B, T, C)}`` to logits ``(B, K)``.

- :class:`STFNHead`: one Residual Inception stack per stream, fusion connections between them,
  temporal aggregation, concatenation of the streams' video vectors, dropout, linear classifier.
- :class:`TSNHead`: per stream dropout + linear classifier on every frame, average consensus over
  ``T``, weighted late fusion of the streams' softmax scores.
- :class:`TemporalInceptionHead`: Ma et al. 2017: the streams' frame features stacked along channels
  ``(B, S*C, T)``, modules of parallel temporal convolutions + BN + ReLU + temporal max-pool, no
  shortcut, then a 1x1 conv and two fully connected layers.

Every head takes only the streams it was built for; the order of streams is always rgb, flow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from stfn.config import HeadConfig
from stfn.models.fusion import FusionConnection
from stfn.models.temporal import (
    ResidualInceptionStack,
    TemporalMaxPool1d,
    TemporalPool,
    cat_channels,
    conv_bn_relu,
)

__all__ = ["STFNHead", "TSNHead", "TemporalInceptionHead", "TemporalInceptionModule"]


def _sequence(features: dict[str, torch.Tensor], stream: str) -> torch.Tensor:
    """``features[stream_feat]`` ``(B, T, C)`` as a channels-first sequence ``(B, C, T)`` (a view: the
    temporal layers compute on the ``(B, T, C)`` memory layout, see :mod:`stfn.models.temporal`)."""
    return features[f"{stream}_feat"].transpose(1, 2)


def _dilations(cfg: HeadConfig) -> list[int]:
    # A list of ones of any length means "no dilation", so kernel_sizes can change on its own.
    return [1] * len(cfg.kernel_sizes) if all(d == 1 for d in cfg.dilations) else list(cfg.dilations)


class STFNHead(nn.Module):
    """Spatio-Temporal Fusion head.

    Per stream: ``(B, T, C) -> (B, C, T)``, 1x1 projection to ``H = cfg.hidden_dim``, ``cfg.blocks``
    Residual Inception blocks (temporal max-pool /2 between blocks with ``cfg.downsample``). A
    :class:`FusionConnection` follows every block (``fusion_place: each``) or only the last one
    (``end``; with 0 blocks it acts on the projected features). Each stream is then pooled over time
    (``cfg.pooling``) to ``(B, H)``; the video vector is the concatenation over streams ``(B, S*H)``,
    then dropout and a linear classifier. With a single stream there is no fusion.
    """

    def __init__(self, in_dim: int, num_classes: int, streams: Sequence[str], cfg: HeadConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or HeadConfig()
        self.streams = list(streams)
        self.stacks = nn.ModuleDict(
            {
                s: ResidualInceptionStack(
                    in_dim, cfg.hidden_dim, cfg.blocks, cfg.kernel_sizes, _dilations(cfg),
                    cfg.pool_branch, cfg.residual, cfg.downsample,
                )
                for s in self.streams
            }
        )
        if cfg.blocks == 0:
            self.fuse_after = {0}  # fuse the projected frame features
        elif cfg.fusion_place == "each":
            self.fuse_after = set(range(1, cfg.blocks + 1))
        else:
            self.fuse_after = {cfg.blocks}
        self.fusions = nn.ModuleDict()  # after block i (as a string key); none with one stream
        if len(self.streams) == 2 and cfg.fusion != "none":
            for i in sorted(self.fuse_after):
                self.fusions[str(i)] = FusionConnection(cfg.fusion, cfg.fusion_direction, cfg.hidden_dim)
        self.pools = nn.ModuleDict({s: TemporalPool(cfg.hidden_dim, cfg.pooling) for s in self.streams})
        self.num_features = cfg.hidden_dim * len(self.streams)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(self.num_features, num_classes)

    def _fuse(self, h: dict[str, torch.Tensor], after: int) -> dict[str, torch.Tensor]:
        if str(after) in self.fusions:
            h["rgb"], h["flow"] = self.fusions[str(after)](h["rgb"], h["flow"])
        return h

    def stream_vectors(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each stream's video-level vector after temporal modelling and fusion: ``{stream: (B, H)}``."""
        h = {s: self.stacks[s].input_proj(_sequence(features, s)) for s in self.streams}
        h = self._fuse(h, 0)
        num_blocks = len(self.stacks[self.streams[0]].blocks)
        for i in range(num_blocks):
            h = {s: self.stacks[s].blocks[i](h[s]) for s in self.streams}
            h = self._fuse(h, i + 1)
            h = {s: self.stacks[s].downsample(h[s], i) for s in self.streams}
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

    ``stream_logits``: per stream ``dropout -> fc`` on every frame ``(B, T, K)``, averaged over ``T``.
    ``forward``: one stream -> its logits; two streams -> ``log(sum_s w_s softmax(l_s) / sum_s w_s)``,
    the log of TSN's weighted average of softmax scores. These are valid logits (their softmax *is* the
    fused score), rank classes exactly as TSN's score fusion does, and can be trained with cross-entropy.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        streams: Sequence[str],
        dropout: float = 0.8,
        fusion_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.streams = list(streams)
        self.in_dim = in_dim
        weights = fusion_weights or {"rgb": 1.0, "flow": 1.5}
        self.fusion_weights = {s: float(weights[s]) for s in self.streams}
        self.num_features = in_dim
        self.drop = nn.Dropout(dropout)
        self.fcs = nn.ModuleDict({s: nn.Linear(in_dim, num_classes) for s in self.streams})

    def stream_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{stream: (B, K)}``: per-frame logits averaged over time (average consensus)."""
        return {s: self.fcs[s](self.drop(features[f"{s}_feat"])).mean(dim=1) for s in self.streams}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.stream_logits(features)
        if len(self.streams) == 1:
            return logits[self.streams[0]]
        total = sum(self.fusion_weights.values())
        terms = [
            torch.log_softmax(logits[s].float(), dim=1) + math.log(self.fusion_weights[s] / total)
            if self.fusion_weights[s] > 0
            else torch.full_like(logits[s].float(), -math.inf)
            for s in self.streams
        ]
        return torch.logsumexp(torch.stack(terms), dim=0)

    def reset_classifier(self, num_classes: int) -> None:
        self.fcs = nn.ModuleDict({s: nn.Linear(self.in_dim, num_classes) for s in self.streams})


class TemporalInceptionModule(nn.Module):
    """``(B, C_in, T) -> (B, C_out, T')``: parallel temporal convs (BN, ReLU), concatenated, then a
    temporal max-pool (k=2, stride 2) when ``T > 1``: 25 -> 12 -> 6 -> 3 -> 1. No shortcut."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int] = (5, 7)) -> None:
        super().__init__()
        width = max(1, out_channels // len(kernel_sizes))
        self.branches = nn.ModuleList(conv_bn_relu(in_channels, width, k) for k in kernel_sizes)
        self.out_channels = width * len(kernel_sizes)
        self.pool = TemporalMaxPool1d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = cat_channels([b(x) for b in self.branches])
        return self.pool(x) if x.shape[-1] > 1 else x


class TemporalInceptionHead(nn.Module):
    """Temporal-Inception (Ma et al. 2017) on the stacked two-stream feature matrix ``(B, S*C, T)``.

    ``cfg.blocks`` :class:`TemporalInceptionModule` s with branches ``cfg.inception_kernels`` and
    ``H = cfg.hidden_dim`` output channels, a 1x1 conv + BN + ReLU, pooling of what is left of ``T``
    (``cfg.pooling``; nothing is left once ``T`` reached 1), then ``fc H -> H``, ReLU, dropout, ``fc H -> K``.
    """

    def __init__(self, in_dim: int, num_classes: int, streams: Sequence[str], cfg: HeadConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or HeadConfig()
        self.streams = list(streams)
        c = in_dim * len(self.streams)
        mods = []
        for _ in range(cfg.blocks):
            mods.append(TemporalInceptionModule(c, cfg.hidden_dim, cfg.inception_kernels))
            c = mods[-1].out_channels
        self.inception = nn.Sequential(*mods)
        self.conv1x1 = conv_bn_relu(c, cfg.hidden_dim)
        self.pool = TemporalPool(cfg.hidden_dim, cfg.pooling)
        self.fc1 = nn.Sequential(nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.ReLU(inplace=True))
        self.num_features = cfg.hidden_dim
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.hidden_dim, num_classes)

    def forward(self, features: dict[str, torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        x = cat_channels([_sequence(features, s) for s in self.streams])  # (B, S*C, T)
        x = self.fc1(self.pool(self.conv1x1(self.inception(x))))
        return x if pre_logits else self.fc(self.drop(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)
