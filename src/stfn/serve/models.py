"""The checkpoints a server holds: one :class:`~stfn.predict.Predictor` per checkpoint, named by its
file, plus the same predictor with other test crops, made on first use (the network is shared).

A server runs its networks on the fastest backend by default (:func:`serve_backend`): compiled where
the backbone is large enough for ``torch.compile`` to pay over a server's life, eager otherwise, and a
compiled network is warmed up (compiled, for every number of test crops) by :func:`warm_up` before
the server answers, so that no request waits for the compilation.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stfn.data.prepare.record import resolve_prepare_settings
from stfn.engine.backends import choose_backend
from stfn.engine.checkpoint import load_model
from stfn.engine.hub import is_repo_id
from stfn.errors import StfnError
from stfn.predict import BACKENDS, Predictor
from stfn.runtime import resolve_device
from stfn.sharing import model_card

__all__ = ["SERVE_BACKENDS", "SERVER_LIFE_FRAMES", "ModelEntry", "load_models", "model_names", "serve_backend",
           "warm_up"]

CROPS = (1, 3, 10)
SERVE_BACKENDS = BACKENDS
# Frames a server is assumed to send through each backbone over its life, for the `auto` choice: about
# 500 /v1/explain requests of a two-stream T=8 network at 1 crop (13 clips: the video and 12 windows,
# x 8 frames x 2 backbones = 208 frames each), or 6000 /v1/predict requests.
SERVER_LIFE_FRAMES = 100_000


def serve_backend(setting: str, model: nn.Module, device: torch.device, size: int) -> str:
    """``auto | eager | compile | onnx | openvino`` -> the backend ``stfn serve`` runs ``model`` on (``size``: crop px).

    ``auto`` is :func:`stfn.engine.backends.choose_backend` for :data:`SERVER_LIFE_FRAMES` frames:
    ``openvino`` on a CPU with native bf16 where ``stfn[openvino]`` is installed and the backbone's work
    repays the conversion (1.07x / 1.29x inductor freezing for resnet18 / resnet50 in bf16 on a 2-core
    AVX512-BF16 EPYC, BENCHMARKS.md; a backbone of at least ``2 x 600 / 100 000 = 1.2%`` of resnet18's
    work per 224 px frame), else ``compile`` when those frames repay the measured compile time, by the
    rule ``stfn eval`` uses (:func:`stfn.runtime.should_compile` for an ``infer`` run: work in
    resnet18-224 frames at least ``COMPILE_MARGIN x`` the break-even of
    :data:`stfn.runtime.COMPILE_BREAK_EVEN`; on the CPU a backbone of at least 0.23x resnet18's work per
    frame), else ``eager`` (cnn_small and other tiny networks; CUDA until ``make gpu-check`` measures
    it). The conversion or compile is paid at start-up by :func:`warm_up`, not by a request. ``auto``
    never picks ``onnx``: ONNX Runtime runs fp32, 0.62x of eager bf16 where the CPU does bf16 natively.
    """
    if setting not in SERVE_BACKENDS:
        raise StfnError(f"--backend must be one of {', '.join(SERVE_BACKENDS)}, got '{setting}'")
    if setting in ("auto", "openvino"):
        return choose_backend(setting, model, device, SERVER_LIFE_FRAMES, size, "auto", "--backend", "--backend")
    return setting


def warm_up(predictor: Predictor, threads: int | None = None) -> float:
    """Compile ``predictor``'s network now rather than at a request: run it on zeros shaped like one
    prediction (``V`` views of ``T`` frames per stream, ``(V, T, C, S, S)``, chunked as requests are)
    for its own crops and then for every other ``V`` of :data:`CROPS` a request may ask for; the
    seconds it took.

    These are all the shapes a server feeds the network: :meth:`Predictor.explain`'s windows are one
    clip of the same views each, and :meth:`Predictor.scores` chunks every request as it chunks
    these. Dynamo compiles the first shape statically, the second with the batch size dynamic (its
    automatic dynamic shapes) and, where that graph's guards leave it out, the third; measured with
    its graph counter, no request compiles after this (without it, the first request with other
    crops waited 24 s for a resnet18 STFN on 2 cores).

    ``threads``: the torch threads of the workers that will run the requests (default: this
    thread's). The compiled code is guarded on the thread count: a warm-up with another count than
    the workers' would be compiled again at the first request."""
    size, t = predictor.cfg.data.crop_size, predictor.reader.frames
    channels = {"rgb": 3, "flow": 2 * predictor.reader.flow_length}
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads or before))
    try:
        start = time.perf_counter()
        for views in dict.fromkeys((predictor.crops, *CROPS)):
            predictor.scores({s: torch.zeros(views, t, channels[s], size, size) for s in predictor.streams})
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


@dataclass
class ModelEntry:
    """A loaded checkpoint: its ``name`` in the API, the checkpoint's file name and its predictor, with
    the ``--backend`` asked for and the seconds the start-up warm-up took (0: none, an eager network)."""

    name: str
    checkpoint: str
    predictor: Predictor
    backend_setting: str = "eager"
    warm_up_s: float = 0.0
    _variants: dict[int, Predictor] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def with_crops(self, crops: int | None) -> Predictor:
        """The predictor with ``crops`` test views (``None``: the checkpoint's own)."""
        if crops is None or crops == self.predictor.crops:
            return self.predictor
        with self._lock:
            if crops not in self._variants:
                self._variants[crops] = self.predictor.with_crops(crops)
            return self._variants[crops]

    def describe(self) -> dict[str, Any]:
        """``/v1/models`` entry: name, checkpoint file, model card (classes, architecture, training data
        and split, recorded accuracy) and the prediction settings (``backend``: the one chosen;
        ``backend_setting``: ``--backend``; ``warm_up_s``)."""
        settings = {**self.predictor.settings(), "backend_setting": self.backend_setting,
                    "warm_up_s": round(self.warm_up_s, 3)}
        return {"name": self.name, "checkpoint": self.checkpoint, "card": self.predictor.card, "settings": settings}


def model_names(paths: list[Path]) -> list[str]:
    """Unique API names: the file stem, with the parent folder when two stems clash, then a number."""
    stems = [p.stem for p in paths]
    names = [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 and p.parent.name else p.stem for p in paths]
    out: list[str] = []
    for n in names:
        name, i = n, 2
        while name in out:
            name, i = f"{n}-{i}", i + 1
        out.append(name)
    return out


def _load(path: Path, backend: str, flow: str | None, threads: int | None,
          kwargs: dict[str, Any]) -> tuple[Predictor, float]:
    """One checkpoint's predictor on the backend :func:`serve_backend` picks, warmed up when compiled."""
    model, cfg, ckpt = load_model(path, map_location="cpu")
    device = resolve_device(kwargs.get("device", "auto"), what="--device")
    chosen = serve_backend(backend, model, device, cfg.data.crop_size)
    predictor = Predictor(model, cfg, list(ckpt["classes"]), resolve_prepare_settings(cfg, ckpt, flow),
                          **{**kwargs, "backend": chosen})
    predictor.card = model_card(cfg, ckpt)
    return predictor, warm_up(predictor, threads) if chosen in ("compile", "openvino") else 0.0


def load_models(paths: list[str | os.PathLike], *, backend: str = "auto", flow: str | None = None,
                threads: int | None = None, **kwargs: Any) -> dict[str, ModelEntry]:
    """Load each checkpoint (``weights_only``) on ``backend`` (``auto``: :func:`serve_backend`), compiled
    ones warmed up with the workers' ``threads`` (:func:`warm_up`; pass the pool's); ``flow`` and
    ``kwargs`` as in :class:`Predictor`. The first is the default model."""
    if backend not in SERVE_BACKENDS:
        raise StfnError(f"--backend must be one of {', '.join(SERVE_BACKENDS)}, got '{backend}'")
    files = [Path(p) for p in paths]
    for given, p in zip(paths, files, strict=True):
        if not p.exists() and not is_repo_id(str(given)):
            raise StfnError(f"checkpoint '{p}' does not exist")
    out: dict[str, ModelEntry] = {}
    for name, p in zip(model_names(files), files, strict=True):
        predictor, seconds = _load(p, backend, flow, threads, kwargs)
        out[name] = ModelEntry(name, p.name, predictor, backend, seconds)
    return out
