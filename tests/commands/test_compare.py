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


def test_negative_threads_are_refused_in_compare_demo_and_ablate(tmp_path, capsys) -> None:
    """One rule for --threads in the three study commands (as predict and serve): 0 or more."""
    one_sentence(capsys, "compare", [str(tmp_path), "--splits", str(tmp_path), "--out", str(tmp_path / "c"),
                                     "--threads", "-1"], "--threads must be 0 (torch's choice) or more, got -1")
    one_sentence(capsys, "demo", ["--out", str(tmp_path / "d"), "--threads", "-2"], "--threads must be 0")
    one_sentence(capsys, "ablate", ["--config", str(tmp_path / "x.yaml"), "--grid", "train.lr=0.1,0.2",
                                    "--out", str(tmp_path / "a"), "--threads", "-1"], "--threads must be 0")
    assert not any((tmp_path / n).exists() for n in ("c", "d", "a"))


def test_help_lists_the_documented_flags(capsys) -> None:
    text = check_documented_usage("compare", capsys)
    assert "TSN" in text and "STFN" in text  # the models it compares
