"""The frame backbones on OpenVINO (``stfn.engine.openvino``, ``--backend openvino``): the same scores as
PyTorch for both streams (fp32 tightly, bf16 within its rounding), the same top-1 on real clips, the
weights and keys untouched, one request per thread, and one sentence where it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from stfn import predict as predict_mod
from stfn.cli import main
from stfn.config import config_from_dict
from stfn.engine import backends
from stfn.engine.openvino import converted_streams, openvino_backbones
from stfn.errors import ParameterError, StfnError
from stfn.models import build_model
from stfn.predict import Predictor
from stfn.runtime import cpu_supports_bf16
from suite_helpers import VIDEOS, save_tiny_checkpoint
from test_predict import CLASSES, tiny_config

CPU = torch.device("cpu")
needs_openvino = pytest.mark.skipif(not backends.openvino_available(), reason="openvino is not installed "
                                    '(pip install "stfn[openvino]", part of make\'s install)')


def two_stream(backbone: str = "cnn_small") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"arch": "stfn", "backbone": backbone, "num_classes": 5, "flow_length": 2,
                                      "pretrained": False, "head": {"hidden_dim": 16, "blocks": 1, "dropout": 0.0}}})
    return build_model(cfg.model).eval()


def batch(size: int = 32, t: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"rgb": torch.randn(2, t, 3, size, size, generator=g), "flow": torch.randn(2, t, 4, size, size, generator=g)}


@needs_openvino
def test_both_streams_score_as_in_pytorch_and_keep_their_weights() -> None:
    model, x = two_stream(), batch()
    with torch.inference_mode():
        want = model(x)
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    assert openvino_backbones(model, None) == ["rgb", "flow"]  # the 3-channel and the 2L-channel stem
    assert converted_streams(model) == ["rgb", "flow"]
    with torch.inference_mode():
        got = model(x)
        again = model(batch(t=5))  # another batch size: the batch axis is dynamic, no second conversion
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert again.shape == (2, 5) and len(model.backbones["rgb"].forward._compiled) == 1
    assert model.state_dict().keys() == keys.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in keys.items())


@needs_openvino
@pytest.mark.skipif(not cpu_supports_bf16(), reason="bf16 is emulated on this CPU (no AVX512-BF16 / AMX)")
def test_bf16_is_within_bf16_rounding_of_pytorch_bf16() -> None:
    model, x = two_stream("resnet18"), batch(size=64, t=2)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = model(x).float()
    openvino_backbones(model, torch.bfloat16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x).float()
    assert (got - want).abs().max() <= 0.05 * want.abs().max()


@needs_openvino
def test_training_through_it_is_refused_and_threads_get_their_own_request() -> None:
    model = two_stream()
    openvino_backbones(model)
    frames = torch.randn(4, 3, 32, 32, requires_grad=True)
    with pytest.raises(StfnError, match=r"^a backbone running on OpenVINO is for inference only; train with the eager"):
        model.backbones["rgb"](frames)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        want = model.backbones["rgb"](x)
    outs: list[torch.Tensor] = []
    threads = [threading.Thread(target=lambda: outs.append(model.backbones["rgb"](x))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outs) == 4 and all(torch.equal(o, want) for o in outs)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "two_stream.pt", tiny_config(), CLASSES)


@needs_openvino
@pytest.mark.shared("videos/test.avi", "videos/demo.mp4", "videos/flipping_a_pancake.mkv")
def test_real_clips_get_the_same_top1_as_eager(ckpt: Path) -> None:
    eager = Predictor.from_checkpoint(ckpt, device="cpu", amp="none")
    ov = Predictor.from_checkpoint(ckpt, device="cpu", amp="none", backend="openvino")
    assert ov.backend == "openvino" and ov.settings()["backend"] == "openvino"
    for name in ("test.avi", "demo.mp4", "flipping_a_pancake.mkv"):
        a, b = eager.predict(VIDEOS / name), ov.predict(VIDEOS / name)
        assert a["top"][0]["class"] == b["top"][0]["class"], name
        assert abs(a["top"][0]["prob"] - b["top"][0]["prob"]) < 1e-4


def test_auto_is_openvino_only_where_measured_and_repaid(monkeypatch: pytest.MonkeyPatch) -> None:
    resnet = two_stream("resnet18")
    monkeypatch.setattr(backends, "openvino_measured_here", lambda device: device.type == "cpu")
    assert backends.choose_backend("auto", resnet, CPU, 10_000, 112) == "openvino"
    assert backends.choose_backend("auto", resnet, CPU, 40, 112) == "eager"  # 10 resnet18-224 frames: not repaid
    assert backends.choose_backend("auto", two_stream(), CPU, 10_000, 32) == "eager"  # cnn_small: nothing to gain
    monkeypatch.setattr(backends, "openvino_measured_here", lambda device: False)  # AVX2, or not installed
    assert backends.choose_backend("auto", resnet, CPU, 10**6, 224) == "compile"  # the PyTorch rule, as before
    assert backends.choose_backend("auto", resnet, CPU, 10**6, 224, compile_setting="false") == "eager"
    with pytest.raises(ParameterError, match=r"^backend is openvino, which runs on the CPU, but the device is 'cuda'$"):
        backends.choose_backend("openvino", resnet, torch.device("cuda"), 1, 224)
    with pytest.raises(ParameterError, match=r"^backend must be one of auto, eager, compile, openvino, got 'tvm'$"):
        backends.choose_backend("tvm", resnet, CPU, 1, 224)


def test_without_the_package_it_is_one_sentence(ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails as if not installed
    assert not backends.openvino_available()
    assert main(["predict", str(ckpt), "any.mp4", "--backend", "openvino"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith('--backend is openvino, but the openvino package is not installed; install it with: '
                        'pip install "stfn[openvino]"') and len(err.splitlines()) == 1
    monkeypatch.setattr(predict_mod, "resolve_device", lambda *a, **k: torch.device("cuda"))
    with pytest.raises(ParameterError, match=r"^backend and device must be openvino and cpu together"):
        predict_mod.check_options("cuda", backend="openvino")
    with pytest.raises(StfnError, match=r"^the openvino backend needs the openvino package, which is not installed"):
        openvino_backbones(two_stream())


@needs_openvino
def test_eval_and_extract_features_on_openvino_match_eager(tmp_path, fake_data, capsys) -> None:
    import numpy as np
    from engine_helpers import tiny_config as engine_config

    from stfn.engine.evaluate import evaluate_checkpoint
    from stfn.engine.features import extract_features
    from stfn.engine.train import train

    cfg = engine_config(epochs=1, amp="none")
    cfg.train.eval_every = 0
    train(cfg, tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "last.pt"
    eager = evaluate_checkpoint(ckpt, progress=False, backend="eager")
    ov = evaluate_checkpoint(ckpt, progress=True, backend="openvino")
    assert "backbones: openvino (fp32; rgb, flow)" in capsys.readouterr().err  # the choice, said
    assert [p["pred"] for p in ov.predictions] == [p["pred"] for p in eager.predictions] and ov.top1 == eager.top1
    for p, q in zip(ov.predictions, eager.predictions, strict=True):
        assert np.allclose(p["scores"], q["scores"], atol=1e-4)
    for backend in ("eager", "openvino"):
        extract_features(ckpt, tmp_path / backend, subsets=["test"], progress=False, backend=backend)
    for s in ("rgb", "flow"):
        a, b = (np.load(tmp_path / d / f"test_{s}.npy").astype(np.float32) for d in ("eager", "openvino"))
        assert a.shape == b.shape and np.allclose(a, b, atol=2e-3, rtol=2e-3)  # stored as float16


# issue 24: compile_model put a signal stack of its own on the thread and, at the compiled model's end,
# the one it had found; two freed in the order they were made left the thread on a freed stack, and
# the next handled signal was a SIGSEGV with no traceback (the full suite died at ~64 %)
FREED_IN_ORDER = """
import gc, os, signal, torch
from stfn.engine.openvino import OpenVINOForward
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
first, second = OpenVINOForward(net, "f32", 1), OpenVINOForward(net, "f32", 1)
first.compiled((3, 8, 8)), second.compiled((3, 8, 8))
del first; gc.collect(); del second; gc.collect()
junk = [bytearray(11568) for _ in range(20000)]  # reuse the freed memory
signal.signal(signal.SIGUSR1, lambda *a: print("handled", flush=True))
os.kill(os.getpid(), signal.SIGUSR1)
print("alive")
"""


@needs_openvino
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the signal stack fix is for Linux")
def test_compiled_models_freed_in_order_leave_signals_working() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", FREED_IN_ORDER], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0 and done.stdout.split() == ["handled", "alive"], done.stderr[-2000:]
