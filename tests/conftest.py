"""Fixtures shared by the whole suite (helpers to import by name are in suite_helpers.py); each test
folder's conftest.py adds its own on top."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread and a fixed seed per test: the suite shares 2 cores, and oversubscribed
    threads spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)
