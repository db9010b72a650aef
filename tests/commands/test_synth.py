"""`stfn synth` on the command line: its options' mistakes are one sentence before any video is
written. The generator, and a real tiny run of `stfn synth` with a contact sheet and the refusal of a
folder generated with other settings: tests/data/synthetic/test_synthetic.py."""

from __future__ import annotations

import pytest

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(a_file, capsys) -> None:
    one_sentence(capsys, "synth", [str(a_file / "videos"), "--preset", "tiny"],
                 f"'{a_file}' is a file, not a folder (needed for '{a_file / 'videos'}')")


@pytest.mark.parametrize(("args", "expected"), [
    (["--frames", "abc"], "--frames must look like MIN-MAX or N, got 'abc'"),
    (["--frames", "40-30"], "'frames_max' must be at least frames_min, got 30"),
    (["--train", "0"], "'train_per_class' must be at least 1, got 0"),
    (["--classes", "Square,Nope"], "unknown synthetic class 'Nope'"),
])
def test_bad_options_are_one_sentence_and_write_nothing(args, expected, tmp_path, capsys) -> None:
    one_sentence(capsys, "synth", [str(tmp_path / "syn"), "--preset", "tiny", "--no-progress", *args], expected)
    assert not (tmp_path / "syn").exists()


def test_help_lists_the_documented_flags(capsys) -> None:
    text = check_documented_usage("synth", capsys)
    assert all(preset in text for preset in ("tiny", "small", "full"))
