"""``stfn serve --backend``: the ``auto`` choice (compile a resnet18-sized backbone, never a tiny one),
explicit choices passed through, and a compiled model serving the same top-k as eager without
recompiling."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient
from serve_helpers import VIDEOS, free_port, upload

from stfn import runtime
from stfn.cli import main
from stfn.config import ModelConfig
from stfn.engine import backends
from stfn.errors import StfnError
from stfn.models import build_backbone, build_model
from stfn.serve import models as serve_models
from stfn.serve.app import create_app
from stfn.serve.models import SERVER_LIFE_FRAMES, load_models, serve_backend

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
needs_videos = pytest.mark.shared("videos/test.avi", "videos/demo.mp4", "videos/corrupted.mp4")


def resnet18_rgb() -> torch.nn.Module:
    net = torch.nn.Module()
    net.backbones = torch.nn.ModuleDict({"rgb": build_backbone("resnet18")})
    return net


def test_auto_compiles_a_resnet18_backbone_and_not_a_tiny_one(monkeypatch) -> None:
    monkeypatch.setattr(backends, "openvino_measured_here", lambda device: False)  # an AVX2 CPU, or no openvino
    tiny = build_model(ModelConfig(backbone="cnn_small", num_classes=3, pretrained=False))
    assert serve_backend("auto", tiny, CPU, 32) == "eager"  # cnn_small: under 1% of resnet18's work per frame
    resnet = resnet18_rgb()
    assert serve_backend("auto", resnet, CPU, 224) == "compile"
    assert serve_backend("auto", resnet, CPU, 96) == "eager"  # 0.18x resnet18-224: under the 0.23x threshold
    assert serve_backend("auto", resnet, CUDA, 224) == "eager"  # CUDA's break-even is far beyond a server's life
    threshold = runtime.COMPILE_MARGIN * runtime.COMPILE_BREAK_EVEN[("cpu", "infer")] / SERVER_LIFE_FRAMES
    assert 0.2 < threshold < 0.25  # the fraction of REFERENCE_GFLOPS the docstring and --help state


def test_auto_picks_openvino_where_it_was_measured_fastest(monkeypatch) -> None:
    monkeypatch.setattr(backends, "openvino_measured_here", lambda device: device.type == "cpu")
    tiny = build_model(ModelConfig(backbone="cnn_small", num_classes=3, pretrained=False))
    assert serve_backend("auto", tiny, CPU, 32) == "eager"  # cnn_small at 32 px: too little work to repay it
    resnet = resnet18_rgb()
    assert serve_backend("auto", resnet, CPU, 224) == "openvino"
    assert serve_backend("auto", resnet, CPU, 96) == "openvino"  # no compile time to repay: conversion is ~1.5 s
    assert serve_backend("auto", resnet, CUDA, 224) == "eager"
    threshold = runtime.COMPILE_MARGIN * backends.OPENVINO_BREAK_EVEN / SERVER_LIFE_FRAMES
    assert 0.01 < threshold < 0.015  # the 1.2% of serve_backend's docstring


def test_explicit_backends_pass_through_and_a_bad_one_is_one_sentence() -> None:
    tiny = build_model(ModelConfig(backbone="cnn_small", num_classes=3, pretrained=False))
    for backend in ("eager", "compile", "onnx", "openvino"):
        assert serve_backend(backend, tiny, CPU, 32) == backend
    with pytest.raises(StfnError, match=r"^--backend must be one of auto, eager, compile, onnx, openvino, got 'tvm'$"):
        serve_backend("tvm", tiny, CPU, 32)


def test_the_chosen_backend_is_in_v1_models(checkpoints) -> None:
    models = load_models([checkpoints["rgb"]], backend="eager", device="cpu", amp="none")
    assert models["rgb"].predictor.backend == "eager" and models["rgb"].warm_up_s == 0.0
    auto = load_models([checkpoints["rgb"]], device="cpu", amp="none")  # the default: auto, eager for cnn_small
    with TestClient(create_app(auto, workers=1, queue=1)) as client:
        (entry,) = client.get("/v1/models").json()["models"]
    assert entry["settings"]["backend"] == "eager" and entry["settings"]["backend_setting"] == "auto"
    assert entry["settings"]["warm_up_s"] == 0.0


@pytest.mark.parametrize("argv", [["--backend", "eager"], []])
def test_the_command_passes_backend_on(argv, checkpoints, monkeypatch, capsys) -> None:
    import uvicorn

    asked = []
    real = serve_models.load_models
    monkeypatch.setattr(serve_models, "load_models", lambda paths, **kw: asked.append(kw["backend"]) or real(paths, **kw))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    assert main(["serve", str(checkpoints["rgb"]), "--device", "cpu", "--port", str(free_port()), *argv]) == 0
    assert asked == [argv[1] if argv else "auto"]
    assert "model rgb: backend eager" in capsys.readouterr().err


def test_help_tells_the_backend_default_and_why() -> None:
    from stfn.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["serve"]
    text = " ".join(sub.format_help().split())
    assert "--backend {auto,eager,compile,onnx,openvino}" in text and "default auto" in text
    assert "resnet18" in text and "never onnx" in text and "openvino on a CPU with native bf16" in text


@needs_videos
@pytest.mark.slow  # compiling even cnn_small takes tens of seconds on 2 cores
def test_a_compiled_model_serves_the_eager_top_k_without_recompiling(checkpoints) -> None:
    from torch._dynamo.utils import counters

    eager = load_models([checkpoints["two_stream"]], backend="eager", device="cpu", amp="none")
    compiled = load_models([checkpoints["two_stream"]], backend="compile", threads=2, device="cpu", amp="none")
    assert compiled["two_stream"].warm_up_s > 0  # compiled at start-up, by warm_up
    graphs = counters["stats"]["unique_graphs"]
    requests = [("/v1/predict", 1), ("/v1/explain", 1), ("/v1/explain", 1), ("/v1/predict", 3), ("/v1/predict", 10)]
    answers = {}
    for name, models in (("eager", eager), ("compile", compiled)):
        with TestClient(create_app(models, workers=1, queue=2, threads=2)) as client:  # warmed up with 2
            answers[name] = [upload(client, VIDEOS / "test.avi", route=route, top_k=3, crops=crops).json()
                             for route, crops in requests]
    assert counters["stats"]["unique_graphs"] == graphs  # no request compiled: explain's windows, other crops
    for ref, got in zip(answers["eager"], answers["compile"], strict=True):
        (r,), (g,) = ref["results"], got["results"]
        assert [t["class"] for t in g["top"]] == [t["class"] for t in r["top"]]
        assert [t["prob"] for t in g["top"]] == pytest.approx([t["prob"] for t in r["top"]], abs=1e-4)
    assert answers["compile"][2]["settings"]["backend"] == "compile"
