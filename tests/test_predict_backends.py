"""`Predictor(backend=...)`: eager, compiled and ONNX Runtime give the same scores; bad choices are one
sentence (OpenVINO: tests/engine/test_openvino.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stfn import predict as predict_mod
from stfn.commands import flag_names
from stfn.errors import ParameterError, StfnError
from stfn.predict import BACKENDS, Predictor
from suite_helpers import save_tiny_checkpoint
from test_predict import CLASSES, tiny_config

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "two_stream.pt", tiny_config(), CLASSES)


def random_views(p: Predictor, views: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    size, t, chans = p.cfg.data.crop_size, p.reader.frames, {"rgb": 3, "flow": 2 * p.reader.flow_length}
    return {s: torch.randn(views, t, chans[s], size, size, generator=g) for s in p.streams}


@pytest.mark.slow  # the ONNX export: about 6 s
def test_onnx_backend_scores_like_eager(ckpt: Path) -> None:
    eager = Predictor.from_checkpoint(ckpt, device="cpu", amp="none")
    onnx = Predictor.from_checkpoint(ckpt, device="cpu", backend="onnx", chunk_frames=8)  # 2 views per run
    assert onnx.settings()["backend"] == "onnx" and onnx.settings()["amp"] == "none"  # ONNX runs fp32
    views = random_views(eager)
    torch.testing.assert_close(onnx.scores(views), eager.scores(views), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_compile_backend_scores_like_eager(ckpt: Path) -> None:
    eager = Predictor.from_checkpoint(ckpt, device="cpu", amp="none")
    compiled = Predictor.from_checkpoint(ckpt, device="cpu", amp="none", backend="compile")
    views = random_views(eager)
    torch.testing.assert_close(compiled.scores(views), eager.scores(views), atol=1e-4, rtol=1e-4)


def test_bad_backend_choices_are_one_sentence(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert BACKENDS == ("auto", "eager", "compile", "onnx", "openvino")
    with pytest.raises(ParameterError, match=r"^backend must be one of auto, eager, compile, onnx, openvino, got 'tensorrt'$"):
        Predictor.from_checkpoint(ckpt, device="cpu", backend="tensorrt")
    with pytest.raises(ParameterError, match=r"^device must be auto, cpu, cuda or cuda:N, got 'tpu'$"):
        Predictor.from_checkpoint(ckpt, device="tpu")
    with pytest.raises(StfnError, match=r"^--device must be auto, cpu, cuda or cuda:N, got 'tpu'$"):
        with flag_names(**predict_mod.PREDICT_FLAGS):  # what stfn predict says
            predict_mod.check_options("tpu")
    monkeypatch.setattr(predict_mod, "resolve_device", lambda *a, **k: torch.device("cuda"))
    with pytest.raises(ParameterError, match=r"^backend and device must be onnx and cpu together .*got onnx and 'cuda'"):
        Predictor.from_checkpoint(ckpt, backend="onnx")
    with pytest.raises(StfnError, match=r"^--backend and --device must be onnx and cpu together"):
        with flag_names(**predict_mod.PREDICT_FLAGS):
            predict_mod.check_options("cuda", backend="onnx")
