"""`stfn train` on the command line: its config (YAML, --set, the path shortcuts) and its mistakes.
Training itself: tests/engine/test_train.py; the real chain through `stfn train` (resume with only
--out, the refusal of a folder that holds a checkpoint, a head on cached features):
tests/engine/test_commands.py; Ctrl-C: tests/test_cli.py; `kill -9` and torchrun (subprocesses of
`stfn train`): tests/engine/test_train_kill.py, tests/engine/test_distributed.py; resume on other
data: tests/engine/test_data_identity.py; --no-compile: tests/engine/test_compile_defaults.py."""

from __future__ import annotations

from stfn.cli import build_parser
from stfn.commands.train import load_run_config
from suite_helpers import REPO

from .command_helpers import check_documented_usage, one_sentence

TINY = str(REPO / "configs" / "tiny.yaml")


def test_a_user_mistake_is_one_sentence(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.yaml")
    one_sentence(capsys, "train", ["--config", missing], f"config file '{missing}' does not exist")


def test_without_config_only_a_resume_of_a_run_folder_goes_on(tmp_path, capsys) -> None:
    expected = "--config is required (or --resume with --out pointing at a run folder)"
    one_sentence(capsys, "train", [], expected)
    one_sentence(capsys, "train", ["--out", str(tmp_path / "nowhere"), "--resume"], expected)
    (tmp_path / "run").mkdir()
    one_sentence(capsys, "train", ["--out", str(tmp_path / "run")], expected)  # a run folder, but no --resume
    one_sentence(capsys, "train", ["--config", TINY, "--set", "train.nope=1"], "unknown config key 'train.nope'")


def test_the_path_shortcuts_win_over_the_config_and_set() -> None:
    args = build_parser().parse_args(["train", "--config", TINY, "--set", "data.root=from_set", "--set",
                                      "train.lr=0.5", "--data", "prepared", "--splits", "lists", "--split", "3",
                                      "--features", "feats"])
    cfg = load_run_config(args)
    assert (cfg.data.root, cfg.data.splits, cfg.data.split, cfg.data.features) == ("prepared", "lists", 3, "feats")
    assert cfg.train.lr == 0.5 and cfg.name == "tiny"
    plain = load_run_config(build_parser().parse_args(["train", "--config", TINY]))
    assert (plain.data.root, plain.data.splits, plain.data.split, plain.data.features, plain.train.lr) == (
        "", "", 1, "", 0.01)  # the YAML's own values when no shortcut is given


def test_help_lists_the_documented_flags(capsys) -> None:
    assert "--resume" in check_documented_usage("train", capsys)
