"""Fixtures shared by the whole suite (helpers to import by name are in suite_helpers.py); each test
folder's conftest.py adds its own on top.

The suite is hermetic: every test runs in its own empty working directory (``tmp_path``), so a
``runs/`` left by ``make demo`` or a relative path in a test cannot reach the clone, and the tests
that read the real files in ``../shared`` carry the ``shared`` marker and skip, naming the missing
path, when they are absent (``STFN_SHARED=/nonexistent make test`` runs the suite as a new user's
clone does). The Hugging Face Hub is offline (``HF_HUB_OFFLINE=1``, its cache in a temporary folder):
no test reaches the network or a user's cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from suite_helpers import missing_shared

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: it reads these once
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="stfn-tests-hf-")

#: Fixtures that hand a test the real files of ../shared: a test using one is marked ``shared``.
SHARED_FIXTURES = {"video_shared": ("videos/test.avi",)}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use a ``SHARED_FIXTURES`` fixture ``shared`` too, so that ``-m shared``
    and ``-m "not shared"`` select every test that reads ../shared."""
    for item in items:
        for name in set(getattr(item, "fixturenames", ())) & SHARED_FIXTURES.keys():
            item.add_marker(pytest.mark.shared(*SHARED_FIXTURES[name]))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a ``@pytest.mark.shared(*paths)`` test whose files are absent, saying which."""
    for mark in item.iter_markers("shared"):
        reason = missing_shared(*mark.args)
        if reason:
            pytest.skip(reason)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread and a fixed seed per test: the suite shares 2 cores, and oversubscribed
    threads spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test in its own empty directory: relative paths never resolve against the clone."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
