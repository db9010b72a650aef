"""`stfn export` on the command line: its options and output path are checked with one sentence.
Exporting itself (ONNX and TorchScript against PyTorch, `stfn export` writing a file, --out naming a
folder, a missing checkpoint, no onnx installed): tests/test_export.py."""

from __future__ import annotations

import pytest

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.pt")
    one_sentence(capsys, "export", [missing, "--out", str(tmp_path / "m.onnx")], f"checkpoint '{missing}' does not exist")


@pytest.mark.parametrize(("args", "expected"), [
    (["--size", "0"], "export needs --frames >= 1 and --size >= 1, got frames=2 size=0"),
    (["--frames", "0"], "export needs --frames >= 1 and --size >= 1, got frames=0 size=32"),
])
def test_out_of_range_values_are_refused_not_clamped(args, expected, tiny_checkpoint, tmp_path, capsys) -> None:
    one_sentence(capsys, "export", [str(tiny_checkpoint), "--out", str(tmp_path / "m.onnx"), *args], expected)
    assert not (tmp_path / "m.onnx").exists()


def test_an_output_under_a_file_names_the_file(tiny_checkpoint, a_file, capsys) -> None:
    """Issue 17 item 5: an output path below an existing file ended in "File exists: 'a_file'"; it says
    which file stands where a folder is needed."""
    err = one_sentence(capsys, "export", [str(tiny_checkpoint), "--out", str(a_file / "m.onnx")], "")
    assert err.endswith(f"error: '{a_file}' is a file, not a folder"), err


def test_help_lists_the_documented_flags(capsys) -> None:
    text = check_documented_usage("export", capsys)
    assert "onnx" in text and "torchscript" in text
