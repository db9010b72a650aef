"""`stfn export`: ONNX (run in onnxruntime) and TorchScript files give PyTorch's logits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from stfn.cli import main
from stfn.config import config_from_dict
from stfn.errors import StfnError
from stfn.export import example_inputs, export_checkpoint, run_exported
from suite_helpers import save_tiny_checkpoint

CLASSES = ["a", "b", "c"]
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\.load.* is deprecated:FutureWarning")


def save_tiny(path: Path, streams=("rgb", "flow"), arch="stfn", backbone="cnn_small", **head) -> Path:
    cfg = config_from_dict({
        "model": {"arch": arch, "streams": list(streams), "num_classes": len(CLASSES), "backbone": backbone,
                  "flow_length": 2, "head": {"hidden_dim": 16, "blocks": 2, "dropout": 0.0, **head}},
        "data": {"frames": 4, "scale_size": 36, "crop_size": 32},
    })
    return save_tiny_checkpoint(path, cfg, CLASSES)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("export") / "tiny.pt")


def reference(ckpt_path: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    from stfn.engine.checkpoint import load_model

    model, _, _ = load_model(ckpt_path)
    with torch.no_grad():
        return model(inputs)


def test_onnx_matches_pytorch_in_onnxruntime(ckpt, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    info = export_checkpoint(ckpt, out, fmt="onnx", frames=6)
    assert out.is_file() and info["max_abs_diff"] < 1e-4
    assert info["inputs"] == {"rgb": [-1, 6, 3, 32, 32], "flow": [-1, 6, 4, 32, 32]}
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["rgb", "flow"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == CLASSES and json.loads(meta["frames"]) == 6
    rgb, flow = example_inputs(["rgb", "flow"], 6, 32, 2, batch=3, seed=7)  # another batch size than exported
    got = session.run(["logits"], {"rgb": rgb.numpy(), "flow": flow.numpy()})[0]
    expected = reference(ckpt, {"rgb": rgb, "flow": flow})
    assert got.shape == (3, len(CLASSES))
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=1e-4)
    assert expected.std() > 1e-3  # the inputs matter: a constant output would match anything


def test_torchscript_matches_pytorch(ckpt, tmp_path):
    out = tmp_path / "model.pt"
    info = export_checkpoint(ckpt, out, fmt="torchscript")
    assert info["max_abs_diff"] < 1e-4 and info["inputs"]["rgb"] == [-1, 4, 3, 32, 32]
    extra = {"stfn.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["stfn.json"])
    assert meta["streams"] == ["rgb", "flow"] and meta["classes"] == CLASSES
    rgb, flow = example_inputs(["rgb", "flow"], 4, 32, 2, batch=2, seed=3)
    with torch.no_grad():
        got = module(rgb, flow)
    torch.testing.assert_close(got, reference(ckpt, {"rgb": rgb, "flow": flow}), atol=1e-4, rtol=1e-4)


def test_single_stream_models_have_one_input(tmp_path):
    pytest.importorskip("onnxruntime")
    for arch, stream in (("stfn", "flow"), ("tsn", "rgb")):
        path = save_tiny(tmp_path / f"{arch}_{stream}.pt", streams=(stream,), arch=arch)
        out = tmp_path / f"{arch}_{stream}.onnx"
        info = export_checkpoint(path, out, fmt="onnx", size=40)
        assert list(info["inputs"]) == [stream] and info["inputs"][stream][-1] == 40
        (x,) = example_inputs([stream], 4, 40, 2, batch=2, seed=1)
        got = run_exported(out, "onnx", {stream: x})
        torch.testing.assert_close(got, reference(path, {stream: x}), atol=1e-4, rtol=1e-4)


def test_cli_export(ckpt, tmp_path, capsys):
    out = tmp_path / "sub" / "m.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    assert torch.is_grad_enabled()  # the command leaves the process's autograd mode as it was
    text = capsys.readouterr().out
    assert out.is_file() and "rgb (B, 4, 3, 32, 32)" in text and "logits (B, 3)" in text and "difference" in text
    assert not [p for p in out.parent.iterdir() if p.name != "m.onnx"]  # no temporary file left behind
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_clear_error_without_onnx(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with pytest.raises(StfnError, match=r"pip install \"stfn\[onnx\]\""):
        export_checkpoint(ckpt, tmp_path / "m.onnx", fmt="onnx")
    assert not (tmp_path / "m.onnx").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    info = export_checkpoint(ckpt, tmp_path / "m.pt", fmt="torchscript")  # TorchScript needs neither
    assert info["max_abs_diff"] is not None


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "nope.pt' does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("arch, backbone, head", [
    ("stfn", "cnn_small", {"fusion": "none"}),
    ("stfn", "cnn_small", {"fusion": "multiply", "fusion_direction": "both"}),
    ("stfn", "cnn_small", {"fusion": "concat", "fusion_direction": "appearance_to_motion"}),
    ("stfn", "cnn_small", {"fusion": "gated", "pooling": "attention"}),
    ("stfn", "cnn_small", {"fusion": "sum", "pooling": "max", "fusion_place": "end"}),
    ("tsn", "cnn_small", {}),
    ("temporal_inception", "cnn_small", {}),
    ("stfn", "resnet18", {}),
])
def test_every_head_exports(tmp_path, arch, backbone, head):
    pytest.importorskip("onnxruntime")
    path = save_tiny(tmp_path / "m.pt", arch=arch, backbone=backbone, **head)
    rgb, flow = example_inputs(["rgb", "flow"], 8, 64, 2, batch=2, seed=5)
    expected = reference(path, {"rgb": rgb, "flow": flow})
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / f"m.{fmt}"
        export_checkpoint(path, out, fmt=fmt, frames=8, size=64)
        got = run_exported(out, fmt, {"rgb": rgb, "flow": flow})
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
