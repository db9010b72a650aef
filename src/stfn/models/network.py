"""What every stfn video network offers: :class:`VideoNetwork`, the type :func:`stfn.models.build_model`
and :func:`stfn.create_model` return (:class:`~stfn.models.stfn.TwoStreamNet` and its TSN,
:class:`~stfn.models.st_resnet.STResNet`)."""

from __future__ import annotations

import abc

import torch
from torch import nn

from stfn.config import ModelConfig

__all__ = ["VideoNetwork"]


class VideoNetwork(nn.Module, abc.ABC):
    """A two-stream video classifier: per-stream backbones, then a head on their per-frame features.

    A batch is a dict of stream inputs: ``rgb (B, T, 3, H, W)``, ``flow (B, T, 2L, H, W)`` (``L`` =
    :attr:`flow_length` stacked flow fields, x and y interleaved), or cached per-frame features
    ``rgb_feat`` / ``flow_feat (B, T, C)`` for a head-only model. ``forward(batch)`` gives the logits
    ``(B, num_classes)``.

    Attributes: ``backbones`` (``nn.ModuleDict`` keyed by stream; empty for a head-only model), ``head``,
    ``streams`` (subset of ``["rgb", "flow"]``, in that order), ``feature_dim`` (C), ``flow_length`` (L),
    ``freeze_backbone``, and ``config``: the :class:`~stfn.config.ModelConfig` it was built from (set by
    :func:`~stfn.models.build_model`; what a checkpoint records to rebuild it).
    """

    backbones: nn.ModuleDict
    head: nn.Module
    streams: list[str]
    feature_dim: int
    flow_length: int
    freeze_backbone: bool
    config: ModelConfig

    @abc.abstractmethod
    def forward_features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-frame features ``{"<stream>_feat": (B, T', C)}`` of a batch."""

    @abc.abstractmethod
    def forward_head(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, num_classes)`` from :meth:`forward_features`' output."""

    @abc.abstractmethod
    def freeze_backbones(self) -> None:
        """Train only the head (or refuse, naming why, where the network cannot)."""

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_head(self.forward_features(batch))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier(s) with fresh ones for ``num_classes`` classes."""
        self.head.reset_classifier(num_classes)
