"""Optimiser groups, schedules, partial BN and frozen backbones on the real cnn_small model."""

from __future__ import annotations

import math

import pytest
import torch
from engine_helpers import tiny_config
from torch.nn.modules.batchnorm import _BatchNorm

from stfn.config import ConfigError, TrainConfig
from stfn.engine.optim import (
    build_optimizer,
    build_scheduler,
    freeze_layers,
    lr_factor,
    param_groups,
    set_train_mode,
)
from stfn.models import build_model


def test_warmup_then_cosine() -> None:
    t = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=2)
    spe = 5  # steps per epoch: 50 steps, 10 of warm-up
    assert [lr_factor(s, t, spe) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr_factor(9, t, spe) == pytest.approx(1.0)
    assert lr_factor(10, t, spe) == pytest.approx(1.0)  # cosine starts at its top
    assert lr_factor(30, t, spe) == pytest.approx(0.5)  # halfway through the 40 cosine steps
    assert lr_factor(50, t, spe) == pytest.approx(0.0, abs=1e-12)


def test_step_and_constant() -> None:
    t = TrainConfig(epochs=10, schedule="step", milestones=[3, 6], gamma=0.1)
    assert lr_factor(0, t, 4) == 1.0
    assert lr_factor(11, t, 4) == 1.0  # epoch 2.75
    assert lr_factor(12, t, 4) == pytest.approx(0.1)  # epoch 3
    assert lr_factor(24, t, 4) == pytest.approx(0.01)
    assert lr_factor(33, TrainConfig(schedule="constant"), 4) == 1.0
    with pytest.raises(ConfigError, match="train.schedule"):
        lr_factor(0, TrainConfig(schedule="linear"), 4)


def test_scheduler_drives_every_group() -> None:
    cfg = tiny_config(lr=0.1, backbone_lr_mult=0.1, schedule="cosine", epochs=2)
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train, steps_per_epoch=2)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["backbone"] == pytest.approx(0.01) and lrs["head"] == pytest.approx(0.1)
    for _ in range(2):
        opt.step()
        sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["head"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 2 / 4)))
    assert lrs["backbone"] == pytest.approx(0.1 * lrs["head"])


def test_param_groups_no_decay_on_bias_and_norm() -> None:
    cfg = tiny_config(weight_decay=1e-4)
    model = build_model(cfg.model)
    groups = {g["name"]: g for g in param_groups(model, cfg.train)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert all(p.ndim <= 1 for p in groups["head_no_decay"]["params"])
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 1e-4
    n_groups = sum(len(g["params"]) for g in groups.values())
    assert n_groups == sum(1 for p in model.parameters() if p.requires_grad)
    with pytest.raises(ConfigError, match="train.optimizer"):
        build_optimizer(model, TrainConfig(optimizer="lamb"))


def test_partial_bn_freezes_all_but_first_bn_of_each_backbone() -> None:
    cfg = tiny_config(partial_bn=True)
    model = build_model(cfg.model)
    freeze_layers(model, cfg)
    set_train_mode(model, cfg.train.partial_bn)
    for backbone in model.backbones.values():
        bns = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
        assert len(bns) > 2
        assert bns[0].training and bns[0].weight.requires_grad
        assert all(not bn.training and not bn.weight.requires_grad for bn in bns[1:])
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    opt = build_optimizer(model, cfg.train)
    batch = {"rgb": torch.randn(2, 4, 3, 32, 32), "flow": torch.randn(2, 4, 4, 32, 32)}
    model(batch).sum().backward()
    opt.step()
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # only the first BN of each backbone (and the head's BNs) update their statistics
    backbone_changed = sorted(k for k in changed if k.startswith("backbones."))
    assert backbone_changed == ["backbones.flow.net.features.1.running_mean",
                                "backbones.rgb.net.features.1.running_mean"]


def test_freeze_backbone_trains_only_the_head() -> None:
    cfg = tiny_config()
    cfg.model.freeze_backbone = True
    model = build_model(cfg.model)
    freeze_layers(model, cfg)
    names = [g["name"] for g in param_groups(model, cfg.train)]
    assert names and all(n.startswith("head") for n in names)
    set_train_mode(model, cfg.train.partial_bn)
    assert not any(m.training for m in model.backbones.modules())
    assert model.head.training


def test_cached_features_freeze_the_backbones_through_the_network() -> None:
    cfg = tiny_config()
    cfg.data.features = "features"
    model = build_model(cfg.model)
    assert not model.freeze_backbone
    freeze_layers(model, cfg)
    assert model.freeze_backbone and not any(p.requires_grad for p in model.backbones.parameters())
    model.train()  # the network itself keeps frozen backbones in eval mode
    assert not any(m.training for m in model.backbones.modules()) and model.head.training


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizer_is_fused_and_agrees_with_the_per_tensor_loop(name: str) -> None:
    """``build_optimizer`` asks for the fused update (PyTorch's default on no device); after 5 steps of a
    two-stream STFN its weights agree with those of the per-tensor loop to float32 rounding."""
    tcfg = TrainConfig(optimizer=name, lr=1e-2, weight_decay=1e-4)
    weights = {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = build_model(tiny_config().model)
        start = [p.detach().clone() for p in model.parameters()]
        opt = build_optimizer(model, tcfg)
        assert all(g["fused"] is True for g in opt.param_groups)
        for g in opt.param_groups:
            g["fused"], g["foreach"] = fused, False
        g_data = torch.Generator().manual_seed(1)
        for _ in range(5):
            batch = {"rgb": torch.randn(2, 4, 3, 32, 32, generator=g_data),
                     "flow": torch.randn(2, 4, 4, 32, 32, generator=g_data)}
            model(batch).square().mean().backward()
            opt.step()
            opt.zero_grad()
        weights[fused] = [p.detach().clone() for p in model.parameters()]
    # the fused kernels round differently (fused multiply-adds): SGD's weights differ by ~1e-11 here,
    # AdamW's by ~5e-6, each well under a thousandth of one step's change (lr)
    assert max((a - b).abs().max().item() for a, b in zip(weights[True], weights[False], strict=True)) < 1e-3 * tcfg.lr
    assert not any(torch.equal(a, b) for a, b in zip(weights[True], start, strict=True))  # every weight moved
