"""Errors a user can cause. The CLI prints their message as one sentence and exits with status 2."""

from __future__ import annotations


class StfnError(Exception):
    """Base class for user-facing errors: bad path, corrupt video, wrong config key, ..."""
