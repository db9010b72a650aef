"""The frame backbones on OpenVINO: the fastest CPU runtime measured for stfn's inference paths.

:func:`openvino_backbones` converts each frame backbone of a network (``model.backbones[stream]``, a
:class:`~stfn.models.backbone.FrameBackbone`: RGB's 3-channel stem and flow's 2L-channel one alike)
with ``openvino.convert_model`` (the PyTorch module itself, traced once on an example frame; the batch
axis left dynamic) and compiles it for the CPU with ``INFERENCE_PRECISION_HINT`` ``bf16`` (the
autocast dtype of ``amp: auto`` on a CPU with native bf16) or ``f32``, on as many threads as torch
uses. The backbone's ``forward`` is replaced on the instance, so every caller of ``forward_features``
(``stfn eval``, ``extract-features``, ``predict``, ``serve``) gets it, while parameters and
``state_dict`` keys stay as they are. The weights are read at conversion: the converted backbone is
for inference of the weights it was given (call it again after changing them). The temporal head
(Residual Inception blocks, fusion, classifier) stays in PyTorch: it is a few percent of the work.

Why: side by side on a 2-core AMD EPYC with AVX512-BF16 (``benchmarks/backbone_throughput.py``,
BENCHMARKS.md section 9), OpenVINO ran resnet18 / resnet50 at 1.07-1.12x / 1.29-1.44x the best PyTorch path in bf16
(inductor freezing) and 1.17-1.35x / 1.39-1.40x in fp32; the issue's AMX figures agree (1.05x / 1.13x).
``openvino`` is an optional dependency (``pip install "stfn[openvino]"``); without it
:func:`require_openvino` says how to install it in one sentence.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from stfn.errors import StfnError
from stfn.models.backbone import FrameBackbone

__all__ = ["OPENVINO_HINT", "converted_streams", "openvino_available", "openvino_backbones", "require_openvino"]

OPENVINO_HINT = 'install it with: pip install "stfn[openvino]"'


def openvino_available() -> bool:
    """Whether ``import openvino`` works here (without importing it twice)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def require_openvino() -> Any:
    """The ``openvino`` module, or one sentence naming the backend and how to install it."""
    try:
        import openvino
    except ImportError:
        raise StfnError(f"the openvino backend needs the openvino package, which is not installed; "
                        f"{OPENVINO_HINT}") from None
    return openvino


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def _keep_sigaltstack() -> Iterator[None]:
    """Put back the calling thread's signal stack after OpenVINO's ``compile_model`` (Linux).

    ``compile_model`` installs a signal stack of its own on the calling thread and, when the compiled
    model is freed, reinstalls the one it found. Two compiled models freed in the order they were made
    (a test suite, a crop size change) leave the thread on the first one's freed stack, and the next
    signal with a handler (SIGCHLD, pytest-timeout's SIGALRM, Ctrl-C) kills the process with SIGSEGV and
    no traceback (issue 24; reproducer in tests/engine/test_openvino.py). With the stack put back, every
    compiled model holds the same one (Python's, never freed), whatever the order they go in."""
    libc = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None).sigaltstack
    before = _StackT()
    if libc is None or libc(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        libc(ctypes.byref(before), None)


class _Traced(nn.Module):
    """The backbone's own class ``forward`` (what the instance had before :func:`openvino_backbones`)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return type(self.backbone).forward(self.backbone, x)


class OpenVINOForward:
    """``backbone.forward`` on OpenVINO: ``(N, C, H, W)`` float -> ``(N, D)`` float32 features.

    One compiled network per ``(C, H, W)`` seen (a predictor sees one; a crop size change converts once
    more), and one infer request per thread that calls it (``stfn serve``'s workers share a predictor;
    an OpenVINO infer request is not for two threads at once). Gradients do not flow through it: a
    training step that reaches it is refused."""

    def __init__(self, backbone: nn.Module, precision: str, threads: int, streams: int = 1) -> None:
        self.backbone, self.precision, self.threads, self.streams = backbone, precision, threads, streams
        self.pin_threads = False  # OpenVINO's default pins its threads to cores, and decode and flow then wait
        self._compiled: dict[tuple[int, ...], Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def compiled(self, shape: tuple[int, ...]) -> Any:
        """The compiled network for frames of ``shape = (C, H, W)`` (converted on first use)."""
        with self._lock:
            if shape not in self._compiled:
                self._compiled[shape] = self._convert(shape)
        return self._compiled[shape]

    def _convert(self, shape: tuple[int, ...]) -> Any:
        """``openvino.convert_model`` of the backbone (batch axis dynamic) compiled for the CPU."""
        ov = require_openvino()
        example = torch.zeros(1, *shape)
        # traced in fp32 with autocast off (OpenVINO has no rule for autocast's casts; its precision hint
        # is the bf16 here), without the tracer's deprecation notes (not the user's to act on)
        with torch.no_grad(), torch.autocast("cpu", enabled=False), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            try:
                model = ov.convert_model(_Traced(self.backbone).eval(), example_input=example,
                                         input=[ov.PartialShape([-1, *shape])])
            except Exception as e:  # the frontend's errors are many kinds, each a long report
                first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise StfnError(f"OpenVINO cannot convert the {getattr(self.backbone, 'name', 'frame')} backbone "
                                f"({first.strip()}); run it with --backend eager or compile") from None
        # one stream per thread that calls at once (a stream runs one request at a time), each with the
        # callers' torch thread count
        config = {"INFERENCE_PRECISION_HINT": self.precision, "NUM_STREAMS": self.streams,
                  "INFERENCE_NUM_THREADS": self.threads * self.streams, "ENABLE_CPU_PINNING": self.pin_threads}
        with _keep_sigaltstack():
            return ov.Core().compile_model(model, "CPU", config)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise StfnError("a backbone running on OpenVINO is for inference only; train with the eager backend")
        shape = tuple(x.shape[1:])
        requests = self._local.__dict__.setdefault("requests", {})
        if shape not in requests:
            requests[shape] = self.compiled(shape).create_infer_request()
        request = requests[shape]
        # NCHW in (a channels_last batch is copied: feeding it as NHWC measured no faster, 235 vs 238 img/s)
        request.infer([x.detach().float().contiguous().numpy()])
        return torch.from_numpy(request.get_output_tensor(0).data.copy())  # OpenVINO owns the buffer


def openvino_backbones(model: nn.Module, dtype: torch.dtype | None = None,
                       threads: int | None = None, streams: int = 1) -> list[str]:
    """Run ``model``'s frame backbones on OpenVINO (in place, ``model`` on the CPU, in eval mode);
    ``dtype``: ``torch.bfloat16`` -> OpenVINO bf16, ``None`` / float32 -> f32. Returns the streams
    converted (a backbone that is not a per-frame CNN, e.g. the spatiotemporal ResNet's, stays in
    PyTorch); the conversion itself happens at each backbone's first call. ``threads`` (default torch's)
    per request; ``streams``: how many threads will call at once (``stfn serve``'s workers), each
    given its own OpenVINO stream so that they run side by side rather than in turn."""
    require_openvino()
    if next(model.parameters(), torch.empty(0)).device.type != "cpu":
        raise StfnError("the openvino backend runs on the CPU; use --device cpu")
    precision = "bf16" if dtype == torch.bfloat16 else "f32"
    threads = int(threads or torch.get_num_threads())
    done = []
    for stream, backbone in getattr(model, "backbones", {}).items():
        if isinstance(backbone, FrameBackbone) and not isinstance(backbone.forward, OpenVINOForward):
            backbone.eval()
            backbone.forward = OpenVINOForward(backbone, precision, threads, max(1, int(streams)))
            done.append(stream)
    return done


def converted_streams(model: nn.Module) -> list[str]:
    """The streams of ``model`` whose backbone runs on OpenVINO."""
    return [s for s, b in getattr(model, "backbones", {}).items()
            if isinstance(getattr(b, "forward", None), OpenVINOForward)]
