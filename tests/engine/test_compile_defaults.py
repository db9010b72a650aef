"""The fast path by default: ``train.compile: auto`` in train, eval and extract-features, the flags
that turn it off, and the amp / channels_last defaults the commands resolve."""

from __future__ import annotations

import argparse

import pytest
import torch

from stfn import runtime
from stfn.config import Config, ModelConfig
from stfn.engine import train as train_mod
from stfn.engine.distributed import DistInfo
from stfn.models import build_model

CPU = torch.device("cpu")


def tiny_model() -> torch.nn.Module:
    return build_model(ModelConfig(backbone="cnn_small", num_classes=3, pretrained=False))


@pytest.mark.parametrize(("setting", "frames", "compiled"), [
    ("auto", 10**9, False),  # CPU training: compiling never paid (runtime.COMPILE_BREAK_EVEN)
    (True, 0, True), ("true", 0, True), ("false", 10**9, False), (False, 10**9, False),
])
def test_train_wrap_compiles_as_resolve_compile_says(setting, frames: int, compiled: bool) -> None:
    cfg = Config()
    cfg.train.compile = setting
    net = train_mod._wrap(tiny_model(), cfg, CPU, DistInfo(), frames)  # torch.compile is lazy: no cost here
    assert hasattr(net, "_orig_mod") is compiled


def test_auto_compiles_long_cuda_runs_but_not_short_ones() -> None:
    cuda = torch.device("cuda")  # a device object needs no GPU
    need = runtime.COMPILE_MARGIN * runtime.COMPILE_BREAK_EVEN[("cuda", "train")]
    assert runtime.resolve_compile("auto", cuda, int(need), "train")
    assert not runtime.resolve_compile("auto", cuda, int(need) - 1, "train")
    assert runtime.resolve_compile("auto", CPU, 10**6, "infer") and not runtime.resolve_compile("auto", CPU, 100, "infer")


def test_the_cli_flags_turn_compile_off() -> None:
    from stfn.commands import evaluate, extract_features
    from stfn.commands import train as train_cmd

    p = argparse.ArgumentParser()
    train_cmd.add_arguments(p)
    args = p.parse_args(["--config", "configs/tiny.yaml", "--no-compile"])
    assert train_cmd.load_run_config(args).train.compile is False
    assert train_cmd.load_run_config(p.parse_args(["--config", "configs/tiny.yaml"])).train.compile == "auto"
    for cmd, argv in ((evaluate, ["x.pt"]), (extract_features, ["x.pt", "--out", "f"])):
        p = argparse.ArgumentParser()
        cmd.add_arguments(p)
        assert p.parse_args([*argv, "--compile", "false"]).compile == "false"
        assert p.parse_args(argv).compile is None  # the checkpoint's train.compile


def test_commands_resolve_bf16_and_channels_last_where_native(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config()  # what train, eval and extract-features resolve from (train.amp, train.channels_last)
    assert cfg.train.amp == "auto" and cfg.train.channels_last is True
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    assert runtime.resolve_amp(cfg.train.amp, CPU, cfg.train.channels_last) == (torch.bfloat16, False)
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    assert runtime.resolve_amp(cfg.train.amp, CPU, cfg.train.channels_last) == (None, False)
