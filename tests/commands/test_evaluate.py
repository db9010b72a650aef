"""`stfn eval` on the command line: its options and outputs are checked before any evaluation.
The evaluation itself (overlap refusal, output files, fusion of an RGB and a flow checkpoint and the
mean over splits through `stfn eval`): tests/engine/test_evaluate.py; where the data is now (--data,
--splits DIR), the old `--splits 1 2 3` spelling and one --split per checkpoint:
tests/engine/test_data_identity.py; in the real chain: tests/engine/test_commands.py; the metrics:
tests/engine/test_metrics.py; an escape code in a checkpoint's name and Ctrl-C: tests/test_cli.py."""

from __future__ import annotations

import pytest

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.pt")
    one_sentence(capsys, "eval", [missing], f"checkpoint '{missing}' does not exist")


@pytest.mark.parametrize("weights", [["-1", "2"], ["1"], ["0", "0"], ["1", "1", "1"]])
def test_fusion_weights_are_two_weights_with_a_positive_sum(weights, tiny_checkpoint, capsys) -> None:
    one_sentence(capsys, "eval", [str(tiny_checkpoint), "--fusion-weights", *weights],
                 f"--fusion-weights must be two weights >= 0 (rgb, flow) with a positive sum, got {' '.join(weights)}")


def test_eval_outputs_are_checked_before_the_evaluation(tmp_path, capsys, monkeypatch) -> None:
    """Issue 17 item 5: `eval --json` naming a folder, a file in a read-only folder, or `--out` naming a
    file is one sentence before any evaluation (it used to fail after it, losing the evaluation)."""
    import stfn.engine.evaluate
    from stfn import fileio

    def must_not_run(*args, **kwargs):
        raise AssertionError("the evaluation ran before its outputs were checked")

    monkeypatch.setattr(stfn.engine.evaluate, "evaluate_many", must_not_run)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    ckpt = str(tmp_path / "best.pt")
    one_sentence(capsys, "eval", [ckpt, "--json", str(tmp_path)], f"--json '{tmp_path}' is a folder; give a file name")
    one_sentence(capsys, "eval", [ckpt, "--out", str(a_file)], f"--out '{a_file}' is a file, not a folder")
    real = fileio._temp_file

    def read_only(path):
        if path.parent == tmp_path / "ro":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(fileio, "_temp_file", read_only)
    one_sentence(capsys, "eval", [ckpt, "--json", str(tmp_path / "ro" / "r.json")], "cannot be written: Permission denied")


def test_help_lists_the_documented_flags_and_defines_mean_class_accuracy(capsys) -> None:
    text = " ".join(check_documented_usage("eval", capsys).split())
    assert "mean class accuracy: the mean, over the classes that have test videos" in text
