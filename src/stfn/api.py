"""The public Python API: build, train, save, load and run stfn models from a notebook or your own code.

Every name here is re-exported by the package (``stfn.create_model``, ``stfn.load_model``, ...), loaded
on first use, so ``import stfn`` and ``stfn --help`` stay fast. Models are built by name, as timm's
``create_model`` and torchvision's ``get_model`` do::

    import stfn
    stfn.list_models()                      # ['st_resnet', 'stfn', 'temporal_inception', 'tle', 'ts_lstm', 'tsn']
    model = stfn.create_model("stfn", num_classes=101, backbone="resnet50", pretrained=True)
    logits = model({"rgb": rgb, "flow": flow})   # (B, T, 3, H, W), (B, T, 2L, H, W) -> (B, 101)
    stfn.save_model(model, "mine.pt", classes=names)
    loaded = stfn.load_model("mine.pt")      # .model (eval mode), .config, .classes
    loaded.predictor().predict("video.mp4")  # decode + flow + network: {"top": [...], ...}

Training from Python without files: :func:`~stfn.engine.epoch.train_one_epoch` and
:func:`~stfn.engine.evaluate.evaluate` take a model, loss, optimiser, loader and device (README, "Python
API"; ``examples/train_in_python.py``). Errors name the parameter a caller passed.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stfn.config import Config, ConfigError, ModelConfig, config_from_dict, config_to_dict
from stfn.data.prepare.record import PrepareSettings, resolve_prepare_settings
from stfn.engine.checkpoint import load_checkpoint, load_state, make_checkpoint, save_checkpoint
from stfn.engine.checkpoint import load_model as load_checkpoint_model
from stfn.models import ARCHS, VideoNetwork, build_model
from stfn.predict import Predictor
from stfn.sharing import model_card

__all__ = ["LoadedModel", "create_model", "list_models", "load_model", "save_model"]

_MODEL_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


def list_models() -> list[str]:
    """The architectures :func:`create_model` builds (``stfn.models.ARCHS``), sorted."""
    return sorted(ARCHS)


def _model_config(arch: str, overrides: dict[str, Any]) -> ModelConfig:
    """A checked :class:`ModelConfig`; an unknown or bad option is one sentence naming the parameter."""
    if arch not in ARCHS:
        raise ConfigError(f"create_model(): arch '{arch}' is not a model (choose {', '.join(list_models())})")
    unknown = sorted(set(overrides) - _MODEL_KEYS)
    if unknown:
        raise ConfigError(f"create_model(): unknown option '{unknown[0]}' (options: "
                          f"{', '.join(sorted(_MODEL_KEYS - {'arch'}))})")
    try:
        return config_from_dict({"model": {"arch": arch, **overrides}}).model
    except ConfigError as e:
        raise _named(e) from None


def _named(e: ConfigError) -> ConfigError:
    """``config key 'model.head.kernels'`` said as the option a caller passed, ``head={"kernels": ...}``."""
    return ConfigError("create_model(): " + re.sub(r"config key 'model\.([\w.]+)'", r"option '\1'", str(e)))


def create_model(
    arch: str,
    *,
    num_classes: int,
    backbone: str = "resnet18",
    streams: tuple[str, ...] | list[str] = ("rgb", "flow"),
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    **overrides: Any,
) -> VideoNetwork:
    """The network ``arch`` (one of :func:`list_models`) with ``num_classes`` outputs, in training mode.

    ``backbone``: a torchvision classifier name (``resnet18``, ``resnet50``, ``mobilenet_v3_large``, ...),
    ``timm:<name>`` or ``cnn_small``; ``pretrained`` loads its ImageNet weights (torchvision weights API /
    timm; needs the network once). ``streams``: any non-empty subset of ``("rgb", "flow")``.
    ``checkpoint_path``: an stfn checkpoint whose weights replace the initial ones (``weights_only``
    loading; it must describe the same network). ``overrides``: any other ``model`` key of the config
    (``flow_length=5``, ``head={"kernels": [1, 3, 5]}``, ``freeze_backbone=True``, ...: ``stfn.config.ModelConfig``).
    The model takes ``{"rgb": (B, T, 3, H, W), "flow": (B, T, 2L, H, W)}`` and returns logits
    ``(B, num_classes)``; ``model.config`` is the :class:`ModelConfig` it was built from.
    """
    cfg = _model_config(arch, {"num_classes": num_classes, "backbone": backbone, "streams": list(streams),
                               "pretrained": pretrained, **overrides})
    try:
        model = build_model(cfg)
    except ConfigError as e:
        raise _named(e) from None
    if checkpoint_path is not None:
        ckpt = load_checkpoint(checkpoint_path)
        load_state(model, ckpt["model"], f"create_model(checkpoint_path='{checkpoint_path}')")
    return model


def save_model(model: VideoNetwork, path: str | os.PathLike, *, classes: list[str], epoch: int = 0,
               metrics: dict[str, Any] | None = None, config: Config | None = None) -> Path:
    """Write ``model`` as an stfn checkpoint at ``path`` (atomically) that :func:`load_model`, ``stfn
    predict``, ``serve``, ``eval`` and ``export`` read. ``classes``: one name per output; ``config``: the
    whole run config (default: the model's own ``model.config`` with default data settings, which
    ``predict`` uses for frames, crop size and resizing)."""
    if not isinstance(model, VideoNetwork):
        raise TypeError(f"save_model(): model must be an stfn network (stfn.create_model), got {type(model).__name__}")
    cfg = config or Config(model=model.config)
    if len(classes) != cfg.model.num_classes:
        raise ConfigError(f"save_model(): {len(classes)} classes given for a model with {cfg.model.num_classes} outputs")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(make_checkpoint(model, cfg, list(classes), epoch, metrics=metrics), out)
    return out


@dataclass
class LoadedModel:
    """A checkpoint, ready to use: ``model`` (eval mode, on ``device``), the run's ``config``, the class
    names (``classes[i]`` is output ``i``), how its training videos were prepared (``prepare``), the
    ``epoch`` and validation ``metrics`` it was saved with, and ``card`` (``stfn model-info``'s fields)."""

    model: VideoNetwork
    config: Config
    classes: list[str]
    prepare: PrepareSettings
    path: Path
    epoch: int
    metrics: dict[str, Any]
    card: dict[str, Any]

    def predictor(self, **kwargs: Any) -> Predictor:
        """A :class:`~stfn.predict.Predictor` on this model (no second load); ``kwargs`` as its own
        (``crops``, ``frames``, ``device``, ``amp``, ``backend``, ...)."""
        predictor = Predictor(self.model, self.config, self.classes, self.prepare, **kwargs)
        predictor.card = self.card
        return predictor

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (no weights)."""
        return {"path": str(self.path), "config": config_to_dict(self.config), "classes": self.classes,
                "epoch": self.epoch, "metrics": self.metrics, "card": self.card}


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu",
               flow: str | None = None) -> LoadedModel:
    """The stfn checkpoint at ``path`` (``weights_only``), its network rebuilt from the checkpoint alone.
    ``flow`` (``ALGO[:OPTION]``) overrides the optical flow algorithm used for new videos."""
    model, cfg, ckpt = load_checkpoint_model(path, map_location="cpu")
    return LoadedModel(model=model.to(device), config=cfg, classes=list(ckpt["classes"]),
                       prepare=resolve_prepare_settings(cfg, ckpt, flow), path=Path(path),
                       epoch=int(ckpt.get("epoch", 0)), metrics=dict(ckpt.get("metrics") or {}),
                       card=model_card(cfg, ckpt))
