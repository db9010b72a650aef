"""stfn: two-stream video action recognition around the Spatio-Temporal Fusion Network.

The public Python API (README, "Python API"), loaded on first use so that ``import stfn`` stays fast::

    stfn.list_models() / stfn.create_model(arch, num_classes=..., ...)   build a network by name
    stfn.save_model(model, path, classes=...) / stfn.load_model(path)    checkpoints (weights_only)
    stfn.save_pretrained(checkpoint, folder)                             a Hub folder (load_model reads it, or ORG/NAME)
    stfn.Predictor                                                        one video in, top-k classes out
    stfn.prepare_dataset(video_root, out_dir, ...)                        videos -> frames + optical flow
    stfn.train(config, out_dir) / stfn.evaluate_checkpoint(path, ...)    a configured run, on prepared data
                                                                          (TrainResult, EvalResult)
    stfn.train_one_epoch(...) / stfn.evaluate(model, loader, device)     your own loop, your own Dataset
    stfn.Config / stfn.load_config(path, overrides)                       the run configuration
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stfn.version import __version__

# public name -> the module that owns it
_API = {
    "create_model": "stfn.api",
    "list_models": "stfn.api",
    "load_model": "stfn.api",
    "save_model": "stfn.api",
    "save_pretrained": "stfn.sharing",
    "LoadedModel": "stfn.api",
    "VideoNetwork": "stfn.models.network",
    "Predictor": "stfn.predict",
    "prepare_dataset": "stfn.data.prepare.run",
    "train": "stfn.engine.train",
    "TrainResult": "stfn.engine.run_folder",
    "train_one_epoch": "stfn.engine.epoch",
    "EpochStats": "stfn.engine.epoch",
    "evaluate": "stfn.engine.evaluate",
    "evaluate_checkpoint": "stfn.engine.evaluate",
    "EvalResult": "stfn.engine.eval_result",
    "Config": "stfn.config",
    "load_config": "stfn.config",
    "StfnError": "stfn.errors",
}

__all__ = [
    "Config",
    "EpochStats",
    "EvalResult",
    "LoadedModel",
    "Predictor",
    "StfnError",
    "TrainResult",
    "VideoNetwork",
    "__version__",
    "create_model",
    "evaluate",
    "evaluate_checkpoint",
    "list_models",
    "load_config",
    "load_model",
    "prepare_dataset",
    "save_model",
    "save_pretrained",
    "train",
    "train_one_epoch",
]  # the _API names and the version (tests/test_api.py checks they agree)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from stfn.api import LoadedModel, create_model, list_models, load_model, save_model
    from stfn.config import Config, load_config
    from stfn.data.prepare.run import prepare_dataset
    from stfn.engine.epoch import EpochStats, train_one_epoch
    from stfn.engine.eval_result import EvalResult
    from stfn.engine.evaluate import evaluate, evaluate_checkpoint
    from stfn.engine.run_folder import TrainResult
    from stfn.engine.train import train
    from stfn.errors import StfnError
    from stfn.models.network import VideoNetwork
    from stfn.predict import Predictor
    from stfn.sharing import save_pretrained


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'stfn' has no attribute '{name}'")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
