"""`stfn compare` on the command line. The comparison itself (the tiny preset on a synthetic data set
through `stfn compare`, on a prepared folder, resume): tests/study/test_compare.py; on real footage:
tests/study/test_real_footage.py (reads ../shared)."""

from __future__ import annotations

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing")
    one_sentence(capsys, "compare", [missing, "--splits", str(tmp_path), "--out", str(tmp_path / "c")],
                 f"'{missing}' does not exist")


def test_zero_seeds_is_refused_before_any_output(tmp_path, capsys) -> None:
    one_sentence(capsys, "compare", [str(tmp_path), "--splits", str(tmp_path), "--out", str(tmp_path / "c"),
                                     "--seeds", "0"], "--seeds must be at least 1, got 0")
    assert not (tmp_path / "c").exists()


def test_help_lists_the_documented_flags(capsys) -> None:
    text = check_documented_usage("compare", capsys)
    assert "TSN" in text and "STFN" in text  # the models it compares
