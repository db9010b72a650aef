"""Helpers shared by the whole suite (a module, so tests in any folder can import them by name)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from stfn.config import Config, config_to_dict
from stfn.models import build_model

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


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
