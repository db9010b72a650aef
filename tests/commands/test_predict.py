"""`stfn predict` on the command line: its options are checked before the checkpoint is read. Predicting
itself (text and --json output, a corrupt video among good ones, folders, a file that is not a
checkpoint): tests/test_predict.py (most read ../shared); its backends and explanations:
tests/test_predict_backends.py, tests/test_predict_explain.py; on real footage:
tests/study/test_real_footage.py."""

from __future__ import annotations

import pytest

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(tmp_path, a_file, capsys) -> None:
    missing = str(tmp_path / "missing.pt")
    one_sentence(capsys, "predict", [missing, str(a_file)], f"checkpoint '{missing}' does not exist")


@pytest.mark.parametrize(("args", "expected"), [
    (["--frames", "0"], "--frames must be at least 1, got 0"),  # used to fall back to data.frames
    (["--top-k", "0"], "--top-k must be at least 1, got 0"),
    (["--threads", "-1"], "--threads must be 0 (default) or more, got -1"),
])
def test_out_of_range_values_are_refused_not_clamped(args, expected, tiny_checkpoint, tmp_path, capsys) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not looked at")
    one_sentence(capsys, "predict", [str(tiny_checkpoint), str(video), *args], expected)


def test_help_lists_the_documented_flags(capsys) -> None:
    text = check_documented_usage("predict", capsys)
    assert all(backend in text for backend in ("eager", "compile", "onnx"))
