"""Which runtime the frame backbones of an inference path run on: ``eager``, ``compile`` or ``openvino``.

One rule for ``stfn eval``, ``extract-features``, ``predict`` and ``serve`` (:func:`choose_backend`):
``auto`` is ``openvino`` where it was measured to be the fastest and the run is long enough to repay
its conversion, else what ``train.compile`` / ``--compile`` says (:func:`stfn.runtime.should_compile`,
``eager`` or ``compile``). :func:`apply_backend` puts the choice in place and :func:`describe_backend`
says it in one line for the command to print.

Measured (``benchmarks/backbone_throughput.py``, 2-core AMD EPYC with AVX512-BF16, 2026-12-07): OpenVINO
against the fastest PyTorch variant (inductor freezing) 1.07-1.12x / 1.29-1.44x for resnet18 / resnet50 in bf16,
1.17-1.35x / 1.39-1.40x in fp32 (two runs, BENCHMARKS.md section 9); the conversion (``openvino.convert_model`` + compile) took 1.4 s / 2.1 s per
backbone, repaid after ``OPENVINO_BREAK_EVEN`` frames (resnet18-224 units, as
:data:`stfn.runtime.COMPILE_BREAK_EVEN`). ``auto`` picks it only on a CPU with native bf16
(AVX512-BF16 or AMX: this machine, and the issue's AMX figures, OpenVINO 1.05x / 1.13x inductor
freezing); on an AVX2-only CPU it was not measured, and ``auto`` keeps the PyTorch choice there.
"""

from __future__ import annotations

import torch
from torch import nn

from stfn.engine.openvino import converted_streams, openvino_available, openvino_backbones
from stfn.errors import ParameterError
from stfn.models.backbone import FrameBackbone
from stfn.runtime import (
    COMPILE_MARGIN,
    REFERENCE_GFLOPS,
    backbone_gflops,
    compile_backbones,
    cpu_supports_bf16,
    should_compile,
)

__all__ = ["INFERENCE_BACKENDS", "OPENVINO_BREAK_EVEN", "apply_backend", "choose_backend", "describe_backend"]

INFERENCE_BACKENDS = ("auto", "eager", "compile", "openvino")
# resnet18-224 frames per backbone after which the OpenVINO conversion has paid: conversion seconds over
# the per-frame saving against eager bf16 (resnet18: 1.4 s / (1/152 - 1/250 s) = 540 frames; resnet50:
# 2.1 s / (1/58 - 1/108 s) = 263 of its frames = 590 resnet18 frames), rounded up.
OPENVINO_BREAK_EVEN = 600.0


def openvino_measured_here(device: torch.device) -> bool:
    """Whether ``auto`` may pick OpenVINO here: a CPU with native bf16, the package installed."""
    return device.type == "cpu" and cpu_supports_bf16() and openvino_available()


def choose_backend(setting: str, model: nn.Module, device: torch.device, frames: int, size: int,
                   compile_setting: bool | str = "auto", what: str = "backend",
                   compile_what: str = "config key 'train.compile'") -> str:
    """``auto | eager | compile | openvino`` -> the backend for ``frames`` images of ``size`` px through
    each of ``model``'s backbones on ``device``. ``auto``: ``openvino`` when :func:`openvino_measured_here`,
    ``model`` has a per-frame backbone and the work (in resnet18-224 frames) is at least
    ``COMPILE_MARGIN x OPENVINO_BREAK_EVEN``; else ``compile`` if ``compile_setting`` says so for this run
    (:func:`~stfn.runtime.should_compile`), else ``eager``. An explicit ``openvino`` off the CPU is a
    :class:`~stfn.errors.ParameterError` naming ``what``."""
    if setting not in INFERENCE_BACKENDS:
        raise ParameterError(what, f"must be one of {', '.join(INFERENCE_BACKENDS)}, got '{setting}'")
    if setting == "openvino" and device.type != "cpu":
        raise ParameterError(what, f"is openvino, which runs on the CPU, but the device is '{device}'")
    if setting != "auto":
        return setting
    frame_backbones = [b for b in getattr(model, "backbones", {}).values() if isinstance(b, FrameBackbone)]
    if frame_backbones and frames and openvino_measured_here(device):
        work = frames * backbone_gflops(model, size) / REFERENCE_GFLOPS
        if work >= COMPILE_MARGIN * OPENVINO_BREAK_EVEN:
            return "openvino"
    return "compile" if should_compile(compile_setting, model, device, frames, size, "infer", compile_what) else "eager"


def apply_backend(model: nn.Module, backend: str, dtype: torch.dtype | None, parallel: int = 1) -> str:
    """Put ``backend`` in place on ``model`` (in eval mode, on its device; ``dtype``: the autocast dtype,
    bf16 or None) and return what runs: ``openvino`` converts the per-frame backbones (a network with
    none, e.g. the spatiotemporal ResNet, stays ``eager``; ``parallel``: threads that will call it at
    once), ``compile`` compiles them with freezing."""
    if backend == "openvino":
        return "openvino" if openvino_backbones(model, dtype, streams=parallel) else "eager"
    if backend == "compile":
        compile_backbones(model)
    return backend


def describe_backend(model: nn.Module, backend: str, dtype: torch.dtype | None) -> str:
    """One line on how ``model``'s backbones run, e.g. ``openvino (bf16; rgb, flow)``."""
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    if backend == "openvino":
        return f"openvino ({precision}; {', '.join(converted_streams(model))})"
    return f"{backend} ({precision})"
