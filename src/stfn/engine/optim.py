"""Optimiser, learning-rate schedule and the layers that stay frozen.

- Parameter groups: backbone vs head (the backbone's learning rate is ``lr * backbone_lr_mult``), and
  no weight decay on biases and normalisation parameters (1-D tensors), as in timm.
- Schedules are per optimiser step (:class:`torch.optim.lr_scheduler.LambdaLR`): a linear warm-up over
  ``warmup_epochs`` then ``cosine`` (to 0 at the last step), ``step`` (``gamma`` at each epoch in
  ``milestones``) or ``constant``.
- Frozen layers: ``model.freeze_backbone`` (and head-only training on cached features) freezes the
  backbones (:meth:`~stfn.models.TwoStreamNet.freeze_backbones`, which keeps them in eval mode
  through every ``model.train()``); ``train.partial_bn`` (TSN) freezes the statistics and affine
  parameters of every BatchNorm layer in each backbone except the first. :func:`set_train_mode`
  re-applies the ``eval()`` part of partial BN after every ``model.train()``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from stfn.config import Config, ConfigError, TrainConfig
from stfn.models import TwoStreamNet

__all__ = [
    "build_optimizer",
    "build_scheduler",
    "freeze_layers",
    "lr_factor",
    "param_groups",
    "set_train_mode",
]


def _partial_bn_layers(model: TwoStreamNet) -> list[nn.Module]:
    """Every BatchNorm layer of every backbone except the first one of each (TSN partial BN)."""
    out: list[nn.Module] = []
    for backbone in model.backbones.values():
        bns = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
        out.extend(bns[1:])
    return out


def freeze_layers(model: TwoStreamNet, cfg: Config) -> None:
    """Turn off gradients of the frozen parts (call once, before building the optimiser)."""
    if cfg.model.freeze_backbone or cfg.data.features:
        model.freeze_backbones()
    if cfg.train.partial_bn:
        for bn in _partial_bn_layers(model):
            bn.requires_grad_(False)


def set_train_mode(model: nn.Module, partial_bn: bool = False) -> None:
    """``model.train()`` (frozen backbones stay in eval mode), then, with ``partial_bn`` (config key
    ``train.partial_bn``), ``eval()`` on the partial-BN layers (BN statistics must not move where the layer
    is frozen)."""
    model.train()
    if partial_bn:
        for bn in _partial_bn_layers(model):
            bn.eval()


def param_groups(model: nn.Module, tcfg: TrainConfig) -> list[dict]:
    """Up to four groups (backbone/head x decay/no-decay) of the trainable parameters.

    Each group carries ``name`` and its own ``lr`` and ``weight_decay``.
    """
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_backbone = name.startswith("backbones.")
        no_decay = p.ndim <= 1
        buckets.setdefault((is_backbone, no_decay), []).append(p)
    groups = []
    for (is_backbone, no_decay), params in sorted(buckets.items()):
        groups.append(
            {
                "name": ("backbone" if is_backbone else "head") + ("_no_decay" if no_decay else ""),
                "params": params,
                "lr": tcfg.lr * (tcfg.backbone_lr_mult if is_backbone else 1.0),
                "weight_decay": 0.0 if no_decay else tcfg.weight_decay,
            }
        )
    return groups


def build_optimizer(model: nn.Module, tcfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov off) or AdamW over :func:`param_groups`, with PyTorch's fused update
    (one kernel over all tensors; on the CPU and CUDA alike, where PyTorch picks it by itself on
    neither). It rounds differently from the per-tensor loop (fused multiply-adds: weights within a
    thousandth of a step after 5 steps, ``tests/engine/test_optim.py``). AdamW's update over a TS-LSTM head
    (2.2 M parameters) takes 1.1 ms fused against 3.7 ms with the multi-tensor (``foreach``) update
    with one thread, 0.56 against 1.71 ms with two (2-core Zen 5, ``benchmarks/training_step.py``)."""
    groups = param_groups(model, tcfg)
    if not groups:
        raise ConfigError("nothing to train: every parameter is frozen (check model.freeze_backbone)")
    if tcfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay,
                               fused=True)
    if tcfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=tcfg.lr, weight_decay=tcfg.weight_decay, fused=True)
    raise ConfigError(f"config key 'train.optimizer' must be sgd or adamw, got '{tcfg.optimizer}'")


def lr_factor(step: int, tcfg: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    total = max(1, tcfg.epochs * steps_per_epoch)
    warmup = int(round(tcfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if tcfg.schedule == "constant":
        return 1.0
    if tcfg.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if tcfg.schedule == "step":
        epoch = step / steps_per_epoch
        return tcfg.gamma ** sum(1 for m in tcfg.milestones if epoch >= m)
    raise ConfigError(f"config key 'train.schedule' must be cosine, step or constant, got '{tcfg.schedule}'")


def build_scheduler(
    optimizer: torch.optim.Optimizer, tcfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule; call ``scheduler.step()`` after every ``optimizer.step()``."""
    lr_factor(0, tcfg, steps_per_epoch)  # validate the schedule name now, not at the first step

    def factor(step: int) -> float:
        return lr_factor(step, tcfg, steps_per_epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
