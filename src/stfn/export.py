"""Export a trained network to ONNX or TorchScript for a fixed number of frames.

The exported graph takes one tensor per stream, in the order of ``model.streams``, and returns
``logits (B, num_classes)``; the batch axis is dynamic, ``T`` and the crop size are fixed:

- ``rgb``  float ``(B, T, 3, S, S)``, normalised with the ImageNet mean and std;
- ``flow`` float ``(B, T, 2L, S, S)``, channels ``x1, y1, x2, y2, ...``, centred and scaled as in training.

Pre-processing (decoding, flow, sampling, crops) stays outside the graph; ``stfn.predict`` shows how.
Class names and the input description travel with the file (ONNX ``metadata_props``, TorchScript
extra file ``stfn.json``).

Example::

    info = export_checkpoint("runs/ucf101/best.pt", "model.onnx", fmt="onnx")
    print(info["max_abs_diff"])      # exported graph vs PyTorch on a random input
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stfn.engine.checkpoint import load_model
from stfn.errors import StfnError
from stfn.fileio import atomic_path

__all__ = ["FORMATS", "ExportWrapper", "example_inputs", "export_checkpoint", "export_model", "require_onnxruntime",
           "run_exported"]

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
_INSTALL_HINT = 'install it with: pip install "stfn[onnx]"'


class ExportWrapper(nn.Module):
    """Positional stream tensors in, logits out: the dict batch of :mod:`stfn.models` made traceable.

    ``forward(*inputs)`` takes one tensor per entry of ``streams`` (``rgb (B, T, 3, H, W)``,
    ``flow (B, T, 2L, H, W)``) and returns ``logits (B, num_classes)``.
    """

    def __init__(self, model: nn.Module, streams: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.streams = list(streams)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(dict(zip(self.streams, inputs, strict=True)))


def example_inputs(
    streams: Sequence[str], frames: int, size: int, flow_length: int, batch: int = 1, seed: int = 0
) -> tuple[Tensor, ...]:
    """Random float inputs, one per stream: ``rgb (B, T, 3, S, S)``, ``flow (B, T, 2L, S, S)``."""
    g = torch.Generator().manual_seed(seed)
    channels = {"rgb": 3, "flow": 2 * flow_length}
    return tuple(torch.randn(batch, frames, channels[s], size, size, generator=g) for s in streams)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise StfnError(f"ONNX export needs the 'onnx' package, which is not installed; {_INSTALL_HINT}") from None


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or one sentence saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise StfnError(
            f"running an ONNX file (the export check, predict --backend onnx) needs the 'onnxruntime' package, which is not installed; {_INSTALL_HINT}"
        ) from None
    return onnxruntime


def _write_onnx(wrapper: ExportWrapper, inputs: tuple[Tensor, ...], tmp: str, metadata: dict[str, Any]) -> None:
    _require_onnx()
    import onnx

    names = list(wrapper.streams)
    dynamic = {n: {0: "batch"} for n in [*names, "logits"]}
    torch.onnx.export(
        wrapper,
        inputs,
        tmp,
        input_names=names,
        output_names=["logits"],
        dynamic_axes=dynamic,
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    proto = onnx.load(tmp)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, tmp)


def _write_torchscript(wrapper: ExportWrapper, inputs: tuple[Tensor, ...], tmp: str, metadata: dict[str, Any]) -> None:
    traced = torch.jit.trace(wrapper, inputs, check_trace=False)
    torch.jit.save(traced, tmp, _extra_files={"stfn.json": json.dumps(metadata)})


def export_model(
    model: nn.Module,
    out: str | os.PathLike,
    *,
    fmt: str,
    streams: Sequence[str],
    frames: int,
    size: int,
    flow_length: int,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (in eval mode, fp32, on CPU) as ``fmt`` to ``out``, atomically; return the path.

    ``metadata`` (JSON-serialisable values) is stored with the file: ONNX ``metadata_props`` with each
    value as a JSON string, or the TorchScript extra file ``stfn.json``.
    """
    if fmt not in FORMATS:
        raise StfnError(f"unknown export format '{fmt}' (choose one of: {', '.join(FORMATS)})")
    if frames < 1 or size < 1:
        raise StfnError(f"export needs --frames >= 1 and --size >= 1, got frames={frames} size={size}")
    out = Path(out)
    if out.is_dir():
        raise StfnError(f"export output '{out}' is a folder; give a file name such as model.{fmt.replace('torchscript', 'pt')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(model, streams).eval().to("cpu", torch.float32)
    inputs = example_inputs(streams, frames, size, flow_length)
    with atomic_path(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        # the shape checks of the models become constants of the graph (T and C are fixed anyway),
        # and torch.jit announces its deprecation on every call: neither is news for the user.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated", category=FutureWarning)
        # dynamo=False is chosen on purpose (it runs in onnxruntime at ~3e-6 with no extra deps)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        write = _write_onnx if fmt == "onnx" else _write_torchscript
        write(wrapper, inputs, tmp, dict(metadata or {}))
    return out


def run_exported(path: str | os.PathLike, fmt: str, inputs: dict[str, Tensor]) -> Tensor:
    """Run an exported file on ``inputs`` (stream name -> tensor) and return its logits ``(B, K)``."""
    path = Path(path)
    if fmt == "onnx":
        ort = require_onnxruntime()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
        return torch.from_numpy(session.run(["logits"], feeds)[0])
    extra = {"stfn.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated", category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    streams = json.loads(extra["stfn.json"] or "{}").get("streams") or list(inputs)
    with torch.no_grad():
        return module(*(inputs[s] for s in streams))


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fmt: str = "onnx",
    frames: int | None = None,
    size: int | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Export the network stored in ``checkpoint`` for ``frames`` frames of ``size`` pixels.

    ``frames`` and ``size`` default to the training config's ``data.frames`` and ``data.crop_size``.
    With ``check``, the exported file runs on a random batch of 2 (the batch axis is dynamic) and its
    logits are compared with PyTorch's. Returns ``{"path", "format", "inputs" (name -> shape, -1 for
    the batch), "num_classes", "classes", "max_abs_diff" (None without check)}``.
    """
    if fmt not in FORMATS:
        raise StfnError(f"unknown export format '{fmt}' (choose one of: {', '.join(FORMATS)})")
    if fmt == "onnx":
        _require_onnx()
        if check:
            require_onnxruntime()
    model, cfg, ckpt = load_model(checkpoint, map_location="cpu")
    model = model.eval().float()
    streams = list(getattr(model, "streams", cfg.model.streams))
    frames = int(cfg.data.frames if frames is None else frames)
    size = int(cfg.data.crop_size if size is None else size)
    L = cfg.model.flow_length
    channels = {"rgb": 3, "flow": 2 * L}
    shapes = {s: [-1, frames, channels[s], size, size] for s in streams}
    classes = list(ckpt.get("classes") or [])
    metadata = {
        "num_classes": cfg.model.num_classes,
        "streams": streams,
        "inputs": shapes,
        "output": "logits",
        "classes": classes,
        "frames": frames,
        "size": size,
        "flow_length": L,
        "config": cfg.name,
    }
    path = export_model(model, out, fmt=fmt, streams=streams, frames=frames, size=size, flow_length=L, metadata=metadata)
    diff = None
    if check:
        inputs = example_inputs(streams, frames, size, L, batch=2, seed=1)
        with torch.no_grad():
            expected = model(dict(zip(streams, inputs, strict=True)))
        got = run_exported(path, fmt, dict(zip(streams, inputs, strict=True)))
        if got.shape != expected.shape:
            raise StfnError(f"exported file '{path}' returned logits of shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
        diff = float((got - expected).abs().max())
    return {"path": str(path), "format": fmt, "inputs": shapes, "num_classes": cfg.model.num_classes,
            "classes": classes, "max_abs_diff": diff}
