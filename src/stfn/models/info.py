"""Size and cost of a network: parameters and FLOPs per part, output shape (``stfn model-info``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from stfn.config import ModelConfig
from stfn.models.stfn import build_model

__all__ = ["example_batch", "model_summary"]


def example_batch(
    model: nn.Module, frames: int, size: int, batch: int = 1, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Zero inputs for ``model``: ``rgb (batch, T, 3, S, S)`` and/or ``flow (batch, T, 2L, S, S)``."""
    channels = {"rgb": 3, "flow": 2 * model.flow_length}
    return {s: torch.zeros(batch, frames, channels[s], size, size, device=device) for s in model.streams}


def _parts(model: nn.Module) -> dict[str, nn.Module]:
    parts = {f"backbones.{s}": m for s, m in model.backbones.items()}
    parts["head"] = model.head
    return parts


def model_summary(cfg: ModelConfig, frames: int = 8, size: int = 224) -> dict[str, Any]:
    """Parameters and FLOPs per video (batch of 1, ``frames`` x ``size`` x ``size``) of ``build_model(cfg)``.

    The network is built and run on the ``meta`` device (no weights are allocated and nothing is
    computed), so this takes well under a second even for resnet50. FLOPs are what
    ``torch.utils.flop_counter`` counts: convolutions and matrix products, a multiply-add = 2 FLOPs.
    """
    cfg = dataclasses.replace(cfg, pretrained=False)  # weights do not change the counts
    with torch.device("meta"):
        model = build_model(cfg).eval()
    batch = example_batch(model, frames, size, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model(batch)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    parts = {}
    for name, module in _parts(model).items():
        parts[name] = {
            "params": sum(p.numel() for p in module.parameters()),
            "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
            "flops": int(sum(counts.get(f"{root}.{name}", {}).values())),
        }
    return {
        "arch": cfg.arch,
        "backbone": cfg.backbone,
        "streams": list(model.streams),
        "num_classes": cfg.num_classes,
        "feature_dim": model.feature_dim,
        "frames": frames,
        "size": size,
        "input": {k: list(v.shape) for k, v in batch.items()},
        "parts": parts,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "flops": int(counter.get_total_flops()),
        "output_shape": list(out.shape),
    }
