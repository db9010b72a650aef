"""Fixtures shared by the whole suite: one CPU thread per test, the real files in ../shared, and a tiny
random-weight checkpoint builder. Each test folder's conftest.py adds its own on top."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from stfn.config import Config, config_to_dict
from stfn.models import build_model

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread and a fixed seed per test: the suite shares 2 cores, and oversubscribed
    threads spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (real videos, split files, real footage); tests that need a file in it skip
    when it is missing."""
    return SHARED


def save_tiny_checkpoint(path: Path, cfg: Config, classes: Sequence[str], extra: dict | None = None) -> Path:
    """A checkpoint of ``build_model(cfg.model)`` with seeded random weights and non-trivial BatchNorm
    statistics (so the test inputs matter), in the layout ``stfn.engine.checkpoint`` reads."""
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    ckpt = {"model": model.state_dict(), "config": config_to_dict(cfg), "classes": list(classes), "epoch": 1}
    ckpt.update(extra or {})
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Callable[..., Path]:
    """:func:`save_tiny_checkpoint`, for tests that build their own configs."""
    return save_tiny_checkpoint
