"""Fixtures of the subcommand tests (helpers in command_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stfn.config import config_from_dict
from suite_helpers import save_tiny_checkpoint


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A two-stream TSN checkpoint of cnn_small (2 classes, 2 frames of 32 px, L = 2), random weights."""
    cfg = config_from_dict({"model": {"arch": "tsn", "num_classes": 2, "backbone": "cnn_small", "flow_length": 2},
                            "data": {"frames": 2, "scale_size": 36, "crop_size": 32}})
    return save_tiny_checkpoint(tmp_path / "tiny.pt", cfg, ["a", "b"])


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A file where a command expects a folder."""
    path = tmp_path / "a_file.txt"
    path.write_text("not a folder\n")
    return path
