"""`stfn ablate` on the command line: the grid and its options are checked before any run. The study
itself (every combination or one axis at a time, seeds, resume, --jobs, the table):
tests/study/test_ablate.py."""

from __future__ import annotations

import pytest

from suite_helpers import REPO

from .command_helpers import check_documented_usage, one_sentence

TINY = str(REPO / "configs" / "tiny.yaml")


def test_a_user_mistake_is_one_sentence(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.yaml")
    one_sentence(capsys, "ablate", ["--config", missing, "--grid", "model.head.blocks=1,2"],
                 f"config file '{missing}' does not exist")


@pytest.mark.parametrize(("args", "expected"), [
    (["--grid", "model.head.blocks"], "grid 'model.head.blocks' must look like key.path=value1,value2"),
    (["--grid", "model.nope=1,2"], "unknown config key 'model.nope'"),
    (["--grid", "model.head.blocks=1,2", "--seeds", "0"], "--seeds and --jobs must be >= 1, got 0 and 1"),
    (["--grid", "model.head.blocks=1,2", "--jobs", "0"], "--seeds and --jobs must be >= 1, got 1 and 0"),
])
def test_a_bad_grid_or_count_is_one_sentence_before_any_run(args, expected, tmp_path, capsys) -> None:
    one_sentence(capsys, "ablate", ["--config", TINY, "--out", str(tmp_path / "ab"), "--no-progress", *args], expected)
    assert not (tmp_path / "ab").exists()


def test_help_lists_the_documented_flags(capsys) -> None:
    assert "model.head.fusion=none,sum,gated" in " ".join(check_documented_usage("ablate", capsys).split())
