"""Where and how a network runs: the one owner of device choice, precision and view-chunked scoring.

Every command that runs a network (train, eval, extract-features, predict, export, the study code,
RAFT flow in ``stfn prepare``) and the benchmarks ask this module, so one machine always gets one
answer:

- :func:`resolve_device`: ``auto | cpu | cuda | cuda:N`` -> a device that exists here;
- :func:`cpu_supports_bf16` and :func:`resolve_amp`: ``amp: auto`` is bfloat16 on a GPU that has it
  (else float16 with loss scaling), bfloat16 on a CPU that runs it in hardware (AVX512-BF16 or AMX)
  with channels_last weights, float32 otherwise;
- :func:`resolve_compile`, :func:`should_compile` and :func:`compile_backbones`: ``train.compile:
  auto`` compiles a run's backbones only when its work repays the compile time (a measured break-even);
- :func:`autocast_context`, :func:`bare_model`, :func:`sync`;
- :func:`score_clips`: logits of many clips in memory-bounded chunks (evaluation and prediction).

It sits at the bottom layer (it imports only torch and :mod:`stfn.config`, for its ``ConfigError``;
of stfn, that module imports only :mod:`stfn.errors` and :mod:`stfn.fileio`), so the data code may
use it too.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from stfn.config import ConfigError

__all__ = [
    "INPUT_KEYS",
    "autocast_context",
    "COMPILE_BREAK_EVEN",
    "REFERENCE_GFLOPS",
    "backbone_gflops",
    "bare_model",
    "compile_backbones",
    "cpu_supports_bf16",
    "describe_dtype",
    "resolve_amp",
    "resolve_compile",
    "resolve_device",
    "score_clips",
    "should_compile",
    "sync",
]

INPUT_KEYS = ("rgb", "flow", "rgb_feat", "flow_feat")  # the batch keys a network reads


def resolve_device(device: str = "auto", what: str = "--device") -> torch.device:
    """``auto | cpu | cuda | cuda:N`` -> a device that exists here (``auto``: CUDA when present).

    ``what`` names the option in the error (``--device``, ``config key 'train.device'``).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
        raise ConfigError(f"{what} must be auto, cpu, cuda or cuda:N, got '{device}'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{what} is '{device}' but no CUDA device is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"{what} must be auto, cpu, cuda or cuda:N, got '{device}'") from None


def cpu_supports_bf16() -> bool:
    """True when this CPU has bfloat16 arithmetic in hardware (AVX512-BF16 or AMX).

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is also true on AVX512 CPUs
    without BF16, where bf16 is emulated: it is only the fallback for a torch without ``torch.cpu``'s
    ISA queries.
    """
    checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(c is None for c in checks):
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return any(bool(c()) for c in checks if c is not None)


def resolve_amp(
    amp: str, device: torch.device, channels_last: bool = True, what: str = "config key 'train.amp'"
) -> tuple[torch.dtype | None, bool]:
    """``auto | none | bf16 | fp16`` -> (autocast dtype or None, use a GradScaler).

    ``auto``: on CUDA bfloat16 where supported, else float16 with loss scaling; on CPU bfloat16 only
    where it runs in hardware (:func:`cpu_supports_bf16`) and with ``channels_last`` (2-3x faster than
    fp32 there), fp32 otherwise: on AVX2-only CPUs bf16 is emulated and 4-5x slower than fp32, and
    bf16 convolutions in the default layout fall back to a reference kernel. ``what`` names the
    option in the error.
    """
    if amp == "none":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError(f"{what} is fp16, which needs a CUDA device; use bf16 or none on a CPU")
        return torch.float16, True
    if amp == "auto":
        if device.type == "cuda":
            return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
        return (torch.bfloat16, False) if channels_last and cpu_supports_bf16() else (None, False)
    raise ConfigError(f"{what} must be auto, none, bf16 or fp16, got '{amp}'")


# Frames (images through one backbone, in units of REFERENCE_GFLOPS: a network with half resnet18's
# FLOPs per frame needs twice as many) after which torch.compile has repaid its compile time, per
# (device type, workload): compile seconds over the per-frame saving, from
# `benchmarks/compile_breakeven.py` (resnet18, 224 px, channels_last, amp auto). `train`: training
# steps (stfn train); `infer`: inference (stfn eval, stfn extract-features). `auto` asks for
# COMPILE_MARGIN times the break-even, since a run also recompiles once for its smaller last batch.
# None: compiling never paid there.
# CPU (2-core Zen 4, AVX512-BF16, bf16 autocast, 2026-12-01), a quiet run (load 0.1-1.1):
#   train: compiled step 0.98x of eager (0.309 vs 0.304 s per 8 frames, compile 35 s; 0.93x at load
#          2.4-2.9): never pays, so `auto` never compiles CPU training;
#   infer (freezing): 1.18x (0.151 vs 0.178 s per 16 frames, compile 19 s): 708 steps = 11300 frames
#          (at load ~7 it was 1.25x and 2500 frames); without freezing 0.91x (never). backbone_throughput
#          agrees: compiled bf16 inference 1.18x eager for resnet18 and resnet50 (load ~1).
# CUDA: not measured yet (`make gpu-check` prints the break-even, to replace these): an estimate from
# a compile of about a minute and a 1.3x faster step, at ~1500 training / ~5000 inference frames/s
# (resnet50): 60 s / (0.67 ms - 0.51 ms) = 400k frames; 60 s / (0.2 ms - 0.154 ms) = 1.3M frames.
COMPILE_BREAK_EVEN: dict[tuple[str, str], float | None] = {
    ("cpu", "train"): None,
    ("cpu", "infer"): 11_300.0,
    ("cuda", "train"): 400_000.0,
    ("cuda", "infer"): 1_300_000.0,
}
COMPILE_MARGIN = 2.0
REFERENCE_GFLOPS = 3.64  # one 224 px frame through resnet18, the network of the break-even measurement
COMPILE_SETTINGS = ("auto", "true", "false")


def resolve_compile(
    setting: bool | str, device: torch.device, frames: int, workload: str = "train",
    what: str = "config key 'train.compile'", gflops_per_frame: float = REFERENCE_GFLOPS,
) -> bool:
    """``auto | true | false`` (or a YAML bool) -> compile or not, for a run that sends ``frames``
    images of ``gflops_per_frame`` each through a backbone in ``workload`` (``train`` | ``infer``) on
    ``device``.

    ``auto``: only when the run's work, in frames of the break-even's network (``frames x
    gflops_per_frame / REFERENCE_GFLOPS``), is at least ``COMPILE_MARGIN x`` the measured break-even of
    :data:`COMPILE_BREAK_EVEN`: the saving of a compiled step grows with the work per frame, its
    compile time hardly, so small networks and short runs (tests, the demo, one-shot predictions)
    never wait for a compilation that would not pay. ``what`` names the option in the error.
    """
    if isinstance(setting, bool):
        return setting
    value = str(setting).strip().lower()
    if value in ("true", "yes", "on"):
        return True
    if value in ("false", "no", "off", "none"):
        return False
    if value != "auto":
        raise ConfigError(f"{what} must be auto, true or false, got '{setting}'")
    break_even = COMPILE_BREAK_EVEN.get((device.type, workload))
    work = frames * gflops_per_frame / REFERENCE_GFLOPS
    return break_even is not None and work >= COMPILE_MARGIN * break_even


def backbone_gflops(model: nn.Module, size: int) -> float:
    """GFLOPs (multiply-add = 2) of one ``size`` px frame through the costliest of ``model.backbones``
    (RGB: 3 input channels, flow: ``2 x flow_length``), counted on one frame in eval mode (BatchNorm
    statistics untouched); 0 for a network without backbones."""
    from torch.utils.flop_counter import FlopCounterMode  # lazy: only `compile: auto` needs it

    channels = {"rgb": 3, "flow": 2 * int(getattr(model, "flow_length", 1))}
    best = 0.0
    for stream, backbone in getattr(model, "backbones", {}).items():
        training = backbone.training
        param = next(backbone.parameters(), None)
        x = torch.zeros(1, channels.get(stream, 3), size, size, device=param.device if param is not None else "cpu")
        counter = FlopCounterMode(display=False)
        try:
            backbone.eval()
            with torch.no_grad(), counter:
                backbone(x)
        finally:
            backbone.train(training)
        best = max(best, counter.get_total_flops() / 1e9)
    return best


def should_compile(
    setting: bool | str, model: nn.Module, device: torch.device, frames: int, size: int, workload: str,
    what: str = "config key 'train.compile'",
) -> bool:
    """:func:`resolve_compile` for ``model``'s backbones at ``size`` px (their FLOPs counted only for
    ``auto``); never for a network without backbones (a head on cached features) under ``auto``."""
    explicit = resolve_compile(setting, device, 0, workload, what) if str(setting).strip().lower() != "auto" else None
    if explicit is not None:
        return explicit
    if not frames or not len(getattr(model, "backbones", ())) or COMPILE_BREAK_EVEN.get((device.type, workload)) is None:
        return False  # nothing to count: no FLOP counting either
    return resolve_compile("auto", device, frames, workload, what, backbone_gflops(model, size))


def compile_backbones(model: nn.Module) -> nn.Module:
    """Compile ``model.backbones`` (a TwoStreamNet's per-stream CNNs) in place for inference, with
    inductor ``freezing`` (weights and BatchNorm folded as constants: the fast inference variant of
    ``benchmarks/backbone_throughput.py``), by ``nn.Module.compile``: parameters and ``state_dict``
    keys stay as they are, and every caller of ``forward_features`` (evaluation, feature extraction)
    gets the compiled backbones. Returns ``model``."""
    for backbone in getattr(model, "backbones", {}).values():
        backbone.compile(options={"freezing": True})
    return model


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def bare_model(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel and/or ``torch.compile`` wrapper."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work (no-op on CPU), so wall-clock timing covers the work itself."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_clips(
    model: nn.Module,
    clips: dict[str, torch.Tensor],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    chunk_frames: int = 256,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits of ``N`` clips, run in chunks of at most ``chunk_frames`` frames (at least one clip).

    ``clips``: per input key a batch of ``N`` clips, ``rgb (N, T, 3, H, W)``, ``flow (N, T, 2L, H, W)``
    or ``rgb_feat (N, T, C)``. Returns float32 CPU ``(N, K)`` logits and, for a network with
    ``stream_logits`` (TSN), ``{stream: (N, K)}``; else ``{}``. The caller picks the grad mode.
    """
    inputs = {k: v for k, v in clips.items() if k in INPUT_KEYS}
    if not inputs:
        raise ValueError(f"no input key among {', '.join(INPUT_KEYS)}")
    first = next(iter(inputs.values()))
    n, t = first.shape[0], first.shape[1]
    per_chunk = max(1, chunk_frames // max(t, 1))
    has_streams = hasattr(model, "stream_logits")
    outs: list[torch.Tensor] = []
    stream_outs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, n, per_chunk):
        chunk = {k: v[start : start + per_chunk].to(device, non_blocking=True) for k, v in inputs.items()}
        with autocast_context(device, amp_dtype):
            feats = model.forward_features(chunk)
            outs.append(model.forward_head(feats).float().cpu())
            if has_streams:
                for s, logit in model.stream_logits(feats).items():
                    stream_outs.setdefault(s, []).append(logit.float().cpu())
    return torch.cat(outs), {s: torch.cat(v) for s, v in stream_outs.items()}


def describe_dtype(dtype: torch.dtype | None) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``; None -> ``"none"`` (for logs and JSON)."""
    return str(dtype).replace("torch.", "") if dtype is not None else "none"
