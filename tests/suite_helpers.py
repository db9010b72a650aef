"""Helpers shared by the whole suite (a module, so tests in any folder can import them by name)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stfn.config import Config, config_to_dict
from stfn.models import build_model

#: The real files next to the clone (``<repo>/../shared``), or wherever ``$STFN_SHARED`` points. Tests
#: that read them carry ``@pytest.mark.shared("videos/test.avi", ...)`` and skip, naming the missing
#: path, when it is absent (a new user's clone has no ../shared); see tests/conftest.py.
REPO = Path(__file__).resolve().parents[1]  # tests run in tmp_path: reach the clone's files through this
SHARED = Path(os.environ.get("STFN_SHARED") or REPO.parent / "shared")
VIDEOS = SHARED / "videos"
DATASETS = SHARED / "datasets"
REALDATA = SHARED / "realdata"


def missing_shared(*paths: str) -> str | None:
    """Why a test that needs ``SHARED / path`` for each of ``paths`` cannot run, or None if it can."""
    for rel in paths or (".",):
        if not (SHARED / rel).exists():
            return f"needs the real files in ../shared: {SHARED / rel} is absent (set STFN_SHARED to their folder)"
    return None


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


def order_task(n: int, seed: int, t: int = 8, c: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame features ``(2n, t, c)`` and labels ``(2n,)``: class 0, a feature drifts along a fixed
    direction over time; class 1, the same frames reversed. Both classes hold the same set of frames,
    so only their order tells them apart (TSN's average consensus scores both alike)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(1, 1, c, generator=torch.Generator().manual_seed(123))
    ramp = (torch.arange(t).float() - (t - 1) / 2).view(1, t, 1) / t
    x = torch.randn(n, 1, c, generator=g) + 2 * ramp * direction + 0.1 * torch.randn(n, t, c, generator=g)
    return torch.cat([x, x.flip(1)]), torch.cat([torch.zeros(n), torch.ones(n)]).long()


def fit_and_score(head: torch.nn.Module, train: dict[str, torch.Tensor], labels: torch.Tensor,
                  test: dict[str, torch.Tensor], test_labels: torch.Tensor, lr: float, steps: int = 60) -> float:
    """Train ``head`` with Adam on random batches of 32 of ``train`` (``{key: (N, ...)}``) for ``steps``
    steps; return its test accuracy (fraction) on ``test``."""
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    head.train()
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(head({k: v[idx] for k, v in train.items()}), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (head.eval()(test).argmax(1) == test_labels).float().mean().item()


def write_features(root: Path, n_train: int = 24, n_test: int = 12, classes: int = 4, frames: int = 6,
                   dim: int = 256, streams: tuple[str, ...] = ("rgb", "flow"), seed: int = 0) -> Path:
    """A features folder (``features.json`` + ``{subset}_{stream}.npy``) with class-dependent,
    noisy features; the class is only recoverable from the two streams' temporal pattern
    (rgb rises over time for even classes, flow carries the class's second bit)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"version": 1, "dtype": "float16", "source": "test", "source_checkpoint": "",
                            "streams": list(streams), "frames": frames, "feature_dim": dim,
                            "classes": [f"class{c}" for c in range(classes)], "subsets": {}}
    for subset, n in (("train", n_train), ("test", n_test)):
        labels = [i % classes for i in range(n)]
        ramp = np.linspace(-1, 1, frames)[:, None]
        for s in streams:
            arr = rng.normal(0, 0.3, size=(n, frames, dim)).astype(np.float32)
            for i, lab in enumerate(labels):
                bit = (lab % 2) if s == "rgb" else (lab // 2)
                arr[i, :, : dim // 4] += (ramp if bit else -ramp) * 1.5
            np.save(root / f"{subset}_{s}.npy", arr.astype(np.float16))
        meta["subsets"][subset] = {"videos": [f"class{lab}/v_{subset}_{i:03d}" for i, lab in enumerate(labels)],
                                   "labels": labels, "identity": {"dataset": "fake", "split": 1}}
    (root / "features.json").write_text(json.dumps(meta))
    return root
