"""`stfn model-info` on the command line. The summary it prints (the default STFN, a config with
overrides, --json, its errors): tests/models/test_info.py; of the ST-ResNet and TS-LSTM configs:
tests/models/test_st_resnet.py, tests/models/test_ts_lstm.py."""

from __future__ import annotations

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(capsys) -> None:
    one_sentence(capsys, "model-info", ["--set", "model.nope=1"], "unknown config key 'model.nope'")


def test_a_config_that_is_not_a_mapping_and_an_override_without_value(a_file, capsys) -> None:
    one_sentence(capsys, "model-info", ["--config", str(a_file)],
                 f"config file '{a_file}' must hold a mapping of sections")
    one_sentence(capsys, "model-info", ["--set", "model.arch"], "override 'model.arch' must look like key.path=value")
    one_sentence(capsys, "model-info", ["--size", "-1"], "--frames and --size must be >= 1, got 8 and -1")


def test_help_lists_the_documented_flags(capsys) -> None:
    assert "default: the built-in defaults, STFN resnet18" in check_documented_usage("model-info", capsys)
