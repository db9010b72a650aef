"""stfn.runtime: one answer per machine for device, precision and view-chunked scoring."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stfn import runtime
from stfn.config import ConfigError
from stfn.runtime import bare_model, resolve_amp, resolve_device, score_clips

CPU = torch.device("cpu")


def test_resolve_device_names_the_option() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto") == (torch.device("cuda") if torch.cuda.is_available() else CPU)
    with pytest.raises(ConfigError, match=r"^config key 'train.device' must be auto, cpu, cuda or cuda:N, got 'tpu'$"):
        resolve_device("tpu", what="config key 'train.device'")
    with pytest.raises(ConfigError, match=r"^--device must be"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"--device is 'cuda:1' but no CUDA device is available"):
            resolve_device("cuda:1")


def test_auto_precision_uses_bf16_only_where_native(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    assert resolve_amp("auto", CPU) == (None, False)  # emulated bf16 (AVX2) would be slower
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    assert resolve_amp("auto", CPU) == (torch.bfloat16, False)
    assert resolve_amp("auto", CPU, channels_last=False) == (None, False)  # NCHW bf16: reference kernels
    assert resolve_amp("none", CPU) == (None, False)
    assert resolve_amp("bf16", CPU) == (torch.bfloat16, False)
    with pytest.raises(ConfigError, match=r"^--amp is fp16, which needs a CUDA device"):
        resolve_amp("fp16", CPU, what="--amp")
    with pytest.raises(ConfigError, match=r"^config key 'train.amp' must be auto, none, bf16 or fp16, got 'half'$"):
        resolve_amp("half", CPU)


def test_cpu_bf16_check_follows_the_isa_queries(monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert runtime.cpu_supports_bf16() is False  # AVX512 without BF16: oneDNN would emulate it
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert runtime.cpu_supports_bf16() is True


class _Counting(nn.Module):
    """Logits = mean of each clip's features, projected; records the chunk sizes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.seen: list[int] = []

    def forward_features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.seen.append(batch["rgb_feat"].shape[0])
        return {"rgb_feat": batch["rgb_feat"]}

    def forward_head(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(feats["rgb_feat"].mean(dim=1))

    def stream_logits(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"rgb": self.forward_head(feats)}


def test_score_clips_chunks_by_frames_and_matches_one_pass() -> None:
    torch.manual_seed(0)
    model = _Counting()
    clips = {"rgb_feat": torch.randn(7, 5, 3), "label": torch.zeros(7)}  # non-input keys are ignored
    logits, streams = score_clips(model, clips, CPU, None, chunk_frames=10)
    assert model.seen == [2, 2, 2, 1]  # 10 frames // 5 per clip = 2 clips per chunk
    with torch.no_grad():
        whole = model.forward_head({"rgb_feat": clips["rgb_feat"]})
    torch.testing.assert_close(logits, whole)
    assert set(streams) == {"rgb"} and streams["rgb"].shape == (7, 4)
    model.seen.clear()
    score_clips(model, clips, CPU, None, chunk_frames=1)
    assert model.seen == [1] * 7  # at least one clip per chunk
    with pytest.raises(ValueError, match="no input key"):
        score_clips(model, {"label": torch.zeros(2)}, CPU, None)


def test_bare_model_unwraps_compile_and_ddp_wrappers() -> None:
    net = nn.Linear(2, 2)

    class Wrapper(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    assert bare_model(net) is net
    assert bare_model(Wrapper(net)) is net
    assert bare_model(torch.compile(net)) is net


def test_resolve_compile_auto_follows_the_break_even(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setitem(runtime.COMPILE_BREAK_EVEN, ("cpu", "train"), 1000.0)
    monkeypatch.setitem(runtime.COMPILE_BREAK_EVEN, ("cpu", "infer"), None)
    need = int(runtime.COMPILE_MARGIN * 1000)
    assert runtime.resolve_compile("auto", cpu, need, "train")
    assert not runtime.resolve_compile("auto", cpu, need - 1, "train")
    assert not runtime.resolve_compile("auto", cpu, 10**9, "infer")  # never paid: never compiled by auto
    assert runtime.resolve_compile("true", cpu, 0, "infer") and runtime.resolve_compile(True, cpu, 0)
    assert not runtime.resolve_compile("false", cpu, 10**9) and not runtime.resolve_compile(False, cpu, 10**9)


def test_resolve_compile_refuses_other_values_in_one_sentence() -> None:
    with pytest.raises(ConfigError, match="--compile must be auto, true or false, got 'fast'"):
        runtime.resolve_compile("fast", torch.device("cpu"), 1, what="--compile")


def test_compile_backbones_compiles_in_place_and_keeps_the_state_dict() -> None:
    from stfn.config import ModelConfig
    from stfn.models import build_model

    model = build_model(ModelConfig(backbone="cnn_small", num_classes=3, pretrained=False))
    keys = list(model.state_dict())
    assert runtime.compile_backbones(model) is model
    assert list(model.state_dict()) == keys
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in model.backbones.values())


def test_the_compile_default_is_auto_and_the_demo_stays_eager(tmp_path) -> None:
    from stfn.config import Config, config_from_dict
    from stfn.study.demo import base_config
    from stfn.study.presets import PRESETS

    assert Config().train.compile == "auto"
    assert config_from_dict({"train": {"compile": False}}).train.compile is False  # old checkpoints
    preset = next(iter(PRESETS.values()))
    assert base_config(preset, tmp_path, tmp_path, 64, 0).train.compile is False
