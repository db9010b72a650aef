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
from suite_helpers import REPO

TINY = str(REPO / "configs" / "tiny.yaml")

CPU = torch.device("cpu")


def tiny_model() -> torch.nn.Module:
    return build_model(ModelConfig(backbone="cnn_small", num_classes=3, pretrained=False))


@pytest.mark.parametrize(("setting", "frames", "compiled"), [
    ("auto", 10**9, False),  # CPU training: compiling never paid (runtime.COMPILE_BREAK_EVEN)
    (True, 0, True), ("true", 0, True), ("false", 10**9, False), (False, 10**9, False),
])
def test_train_wrap_compiles_as_resolve_compile_says(setting, frames: int, compiled: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    class Compiled(torch.nn.Module):  # what torch.compile returns, without importing dynamo (seconds)
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self._orig_mod = model

    monkeypatch.setattr(torch, "compile", Compiled)
    cfg = Config()
    cfg.train.compile = setting
    net = train_mod._wrap_for_training(tiny_model(), cfg, CPU, DistInfo(), frames)
    assert isinstance(net, Compiled) is compiled


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
    args = p.parse_args(["--config", TINY, "--no-compile"])
    assert train_cmd.load_run_config(args).train.compile is False
    assert train_cmd.load_run_config(p.parse_args(["--config", TINY])).train.compile == "auto"
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


def test_extract_features_runs_bf16_and_asks_compile_auto(fake_data, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from engine_helpers import tiny_config

    from stfn.engine import backends, features

    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    seen: list = []
    real = features.autocast_context
    monkeypatch.setattr(features, "autocast_context", lambda device, dtype: seen.append(dtype) or real(device, dtype))
    asked: list = []
    monkeypatch.setattr(backends, "should_compile", lambda setting, model, device, frames, size, workload, what:
                        asked.append((setting, frames, workload)) or False)
    cfg = tiny_config(amp="auto", channels_last=True)
    features.extract_features(cfg, tmp_path / "f", subsets=["test"], device="cpu", progress=False)
    assert seen and set(seen) == {torch.bfloat16}  # amp auto on a bf16 CPU with channels_last
    assert asked == [("auto", 8 * cfg.data.frames, "infer")]  # 8 fake test videos x T frames
    asked.clear()
    features.extract_features(cfg, tmp_path / "g", subsets=["test"], device="cpu", progress=False,
                              torch_compile="false")
    assert asked[0][0] == "false"


def test_auto_weighs_the_work_per_frame() -> None:
    from stfn.models import build_backbone

    need = runtime.COMPILE_MARGIN * runtime.COMPILE_BREAK_EVEN[("cpu", "infer")]
    assert runtime.resolve_compile("auto", CPU, int(need), "infer")  # resnet18-224 frames by default
    assert not runtime.resolve_compile("auto", CPU, int(need), "infer", gflops_per_frame=runtime.REFERENCE_GFLOPS / 2)
    small = tiny_model()  # cnn_small: a tiny fraction of resnet18's work per frame, never worth compiling
    assert runtime.backbone_gflops(small, 32) < 0.01 * runtime.REFERENCE_GFLOPS
    assert not runtime.should_compile("auto", small, CPU, 10**5, 32, "infer")  # a demo-sized run
    assert runtime.should_compile("true", small, CPU, 0, 32, "infer")
    assert not runtime.should_compile("auto", small, CPU, 0, 32, "infer")
    resnet = torch.nn.Module()
    resnet.backbones = torch.nn.ModuleDict({"rgb": build_backbone("resnet18").train()})
    assert runtime.backbone_gflops(resnet, 224) == pytest.approx(runtime.REFERENCE_GFLOPS, rel=0.01)
    assert resnet.backbones["rgb"].training  # counted in eval mode, mode restored


def test_a_compiled_cpu_extraction_sends_one_video_per_forward(fake_data, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path) -> None:
    """Compiled on the CPU, the backbones see one video (T frames) per call, whatever the loader's batch:
    a fixed shape; the features are those of the whole-batch path (to float16 rounding)."""
    import numpy as np
    from engine_helpers import tiny_config

    from stfn.engine import backends, features
    from stfn.models.stfn import TwoStreamNet

    sizes: list[int] = []
    real = TwoStreamNet.forward_features
    monkeypatch.setattr(TwoStreamNet, "forward_features", lambda self, b: sizes.append(len(b["rgb"])) or real(self, b))
    cfg = tiny_config(amp="none", channels_last=False)
    cfg.train.batch_size = 3
    torch.manual_seed(0)  # the same fresh model both times
    features.extract_features(cfg, tmp_path / "whole", subsets=["test"], device="cpu", progress=False,
                              torch_compile="false")
    assert sizes == [3, 3, 2]  # 8 fake test videos in loader batches of 3
    sizes.clear()
    monkeypatch.setattr(backends, "compile_backbones", lambda model: ["rgb", "flow"])  # "compiled", in eager
    torch.manual_seed(0)
    features.extract_features(cfg, tmp_path / "one", subsets=["test"], device="cpu", progress=False,
                              torch_compile="true")
    assert sizes == [1] * 8
    for s in ("rgb", "flow"):
        a, b = (np.load(tmp_path / d / f"test_{s}.npy").astype(np.float32) for d in ("whole", "one"))
        assert a.shape == b.shape and np.allclose(a, b, atol=2e-3, rtol=2e-3)
