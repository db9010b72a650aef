"""Fixtures of the engine tests (helpers in engine_helpers.py, importable from the workers too)."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import fake_builder


@pytest.fixture
def fake_data(monkeypatch: pytest.MonkeyPatch):
    """Serve :class:`FakeVideos` wherever the engine builds a dataset."""
    from stfn.engine import features

    monkeypatch.setattr(features, "build_engine_dataset", fake_builder())
    monkeypatch.setattr(features, "_extraction_dataset", lambda cfg, subset: fake_builder()(cfg, subset, views=1))
    torch.set_num_threads(1)
    return fake_builder
