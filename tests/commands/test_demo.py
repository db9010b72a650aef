"""`stfn demo` on the command line. The demo itself (the tiny preset through `stfn demo`, resume, the
report): tests/study/test_demo.py and tests/study/test_report.py."""

from __future__ import annotations

from stfn.study.presets import PRESETS

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(a_file, capsys) -> None:
    one_sentence(capsys, "demo", ["--out", str(a_file)], f"'{a_file}' is a file, not a folder")


def test_help_lists_the_documented_flags_and_presets(capsys) -> None:
    text = check_documented_usage("demo", capsys)
    assert all(name in text for name in PRESETS) and "default: runs/demo" in text
