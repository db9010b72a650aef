"""Fixtures of the model tests: small configs and batches (one thread and a fixed seed: tests/conftest.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stfn.config import HeadConfig, ModelConfig


@pytest.fixture
def small_cfg():
    """``small_cfg(**model_keys, head=dict(...))``: a small ModelConfig (cnn_small, 5 classes, L=2)."""

    def make(head: dict | None = None, **kw) -> ModelConfig:
        base = {"backbone": "cnn_small", "num_classes": 5, "flow_length": 2}
        base.update(kw)
        h = {"hidden_dim": 32}
        h.update(head or {})
        return dataclasses.replace(ModelConfig(), head=HeadConfig(**h), **base)

    return make


@pytest.fixture
def clip():
    """``clip(B, T, L=2, size=32)``: a random two-stream batch ``{"rgb", "flow"}``."""

    def make(b: int = 2, t: int = 4, flow_length: int = 2, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {
            "rgb": torch.randn(b, t, 3, size, size, generator=g),
            "flow": torch.randn(b, t, 2 * flow_length, size, size, generator=g),
        }

    return make
