"""The ``stfn`` command line: every subcommand's ``--help``, and one user mistake each, answered with one
sentence that names the file or key (exit status 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stfn.cli import COMMANDS, main
from stfn.config import config_from_dict
from suite_helpers import save_tiny_checkpoint


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_subcommand(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: stfn {command}") and "-h, --help" in out


def _mistakes(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Per subcommand: arguments with one mistake, and what the error sentence must say."""
    a_file = tmp / "a_file.txt"
    a_file.write_text("not a folder\n")
    missing = str(tmp / "missing")
    return {
        "demo": (["--out", str(a_file)], f"'{a_file}'"),
        "compare": ([missing, "--splits", str(tmp), "--out", str(tmp / "c")], f"'{missing}' does not exist"),
        "synth": ([str(a_file / "videos"), "--preset", "tiny"], f"'{a_file / 'videos'}'"),
        "prepare": ([missing, str(tmp / "out")], f"video root '{missing}' does not exist"),
        "data-info": (["--dataset", "ucf101", "--splits", missing, "--root", str(tmp)],
                      f"split folder '{missing}' does not exist"),
        "model-info": (["--set", "model.nope=1"], "unknown config key 'model.nope'"),
        "train": (["--config", missing + ".yaml"], f"config file '{missing}.yaml' does not exist"),
        "eval": ([missing + ".pt"], f"checkpoint '{missing}.pt' does not exist"),
        "extract-features": ([missing + ".pt", "--out", str(tmp / "f")], f"checkpoint '{missing}.pt' does not exist"),
        "predict": ([missing + ".pt", str(a_file)], f"checkpoint '{missing}.pt' does not exist"),
        "export": ([missing + ".pt", "--out", str(tmp / "m.onnx")], f"checkpoint '{missing}.pt' does not exist"),
        "ablate": (["--config", missing + ".yaml", "--grid", "model.head.blocks=1,2"],
                   f"config file '{missing}.yaml' does not exist"),
        "serve": ([missing + ".pt"], f"checkpoint '{missing}.pt' does not exist"),
    }


def test_every_subcommand_has_a_tested_mistake(tmp_path: Path) -> None:
    assert set(_mistakes(tmp_path)) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_user_mistake_is_one_sentence(command: str, tmp_path: Path, capsys) -> None:
    args, expected = _mistakes(tmp_path)[command]
    assert main([command, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"stfn {command}: error: ") and expected in err, err
    assert "\n" not in err and "Traceback" not in err


@pytest.mark.e2e
def test_the_installed_entry_point_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "stfn", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("stfn ")
    bare = subprocess.run([sys.executable, "-m", "stfn"], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and "COMMAND" in bare.stdout


def test_out_of_range_values_are_refused_not_clamped(tmp_path: Path, capsys) -> None:
    """``--frames 0``, ``--size 0``, ``--workers -1`` and ``--jpeg-quality 500`` used to be replaced by a
    default or clamped without a word; each is now one sentence naming the option, before any work."""
    cfg = config_from_dict({"model": {"arch": "tsn", "num_classes": 2, "backbone": "cnn_small", "flow_length": 2},
                            "data": {"frames": 2, "scale_size": 36, "crop_size": 32}})
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.pt", cfg, ["a", "b"])
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not looked at")
    cases = [
        (["predict", str(ckpt), str(video), "--frames", "0"], "--frames must be at least 1, got 0"),
        (["export", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--size", "0"], "--size >= 1"),
        (["prepare", str(tmp_path), str(tmp_path / "p1"), "--workers", "-1"], "--workers must be 0"),
        (["prepare", str(tmp_path), str(tmp_path / "p2"), "--jpeg-quality", "500"], "--jpeg-quality must be from 1 to 100"),
        (["eval", str(ckpt), "--fusion-weights", "-1", "2"], "--fusion-weights must be two weights >= 0"),
    ]
    for args, expected in cases:
        assert main(args) == 2, args
        assert expected in capsys.readouterr().err, args
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()  # refused before any output


def test_error_messages_are_one_printable_line(tmp_path: Path, capsys) -> None:
    """Issue 17 item 8: a terminal escape code in a path (or a library's message) is printed escaped,
    never raw; a random file renamed .pt is named as not a checkpoint."""
    odd = tmp_path / "red\x1b[31mname.pt"
    odd.write_bytes(bytes(range(1, 128)) * 8)
    assert main(["eval", str(odd)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "red\\x1b[31mname.pt" in err and "is not a PyTorch checkpoint" in err, err


def test_eval_outputs_are_checked_before_the_evaluation(tmp_path: Path, capsys, monkeypatch) -> None:
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
    cases = [
        (["--json", str(tmp_path)], f"--json '{tmp_path}' is a folder; give a file name"),
        (["--out", str(a_file)], f"--out '{a_file}' is a file, not a folder"),
    ]
    for args, expected in cases:
        assert main(["eval", ckpt, *args]) == 2
        assert expected in capsys.readouterr().err
    real = fileio._temp_file

    def read_only(path):
        if path.parent == tmp_path / "ro":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(fileio, "_temp_file", read_only)
    assert main(["eval", ckpt, "--json", str(tmp_path / "ro" / "r.json")]) == 2
    assert "cannot be written: Permission denied" in capsys.readouterr().err


def test_after_ctrl_c_each_command_says_what_resumes(tmp_path: Path, capsys, monkeypatch) -> None:
    """Issue 17 item 10: train said "run the same command again", which refuses without --resume; it now
    prints the command that resumes. prepare resumes by itself; eval has nothing to resume."""
    import stfn.commands.evaluate
    import stfn.commands.prepare
    import stfn.commands.train

    def interrupt(args):
        raise KeyboardInterrupt

    for module in (stfn.commands.train, stfn.commands.prepare, stfn.commands.evaluate):
        monkeypatch.setattr(module, "run", interrupt)
    run = tmp_path / "my run"
    expected = {
        ("train", "--config", "c.yaml", "--out", str(run)): f"to resume, run: stfn train --config c.yaml --out '{run}' --resume",
        ("train", "--out", str(run), "--resume"): f"to resume, run: stfn train --out '{run}' --resume",
        ("prepare", "videos", "out"): "to resume, run: stfn prepare videos out",
        ("eval", "best.pt"): "stfn eval: interrupted.",
    }
    for argv, message in expected.items():
        assert main(list(argv)) == 130
        assert capsys.readouterr().err.strip().endswith(message)


def test_an_output_under_a_file_names_the_file(tmp_path: Path, capsys) -> None:
    """Issue 17 item 5: an output path below an existing file ended in "File exists: 'a_file'"; it says
    which file stands where a folder is needed."""
    cfg = config_from_dict({"model": {"arch": "tsn", "num_classes": 2, "backbone": "cnn_small", "flow_length": 2,
                                      "streams": ["rgb"]}, "data": {"frames": 2, "scale_size": 36, "crop_size": 32}})
    ckpt = str(save_tiny_checkpoint(tmp_path / "tiny.pt", cfg, ["a", "b"]))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["export", ckpt, "--out", str(a_file / "m.onnx")], f"error: '{a_file}' is a file, not a folder"),
        (["extract-features", ckpt, "--out", str(a_file / "sub" / "feats")],
         f"error: '{a_file}' is a file, not a folder (needed for '{a_file / 'sub' / 'feats'}')"),
    ]
    for args, expected in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(expected), err
