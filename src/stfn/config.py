"""One typed configuration tree for every stfn job.

``Config`` holds three sections (``model``, ``data``, ``train``). Defaults live here; YAML files
override them; ``--set a.b=value`` overrides both. Unknown keys and values of the wrong type are
errors (:class:`ConfigError`) that name the key, so a typo never silently falls back to a default.

Example::

    cfg = load_config("configs/stfn_resnet18.yaml", overrides=["model.head.blocks=3"])
    save_config(cfg, run_dir / "config.yaml")
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stfn.errors import StfnError
from stfn.fileio import atomic_write_text

__all__ = [
    "STREAMS",
    "Config",
    "ConfigError",
    "DataConfig",
    "HeadConfig",
    "ModelConfig",
    "TSLSTMConfig",
    "TLEConfig",
    "STResNetConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]


STREAMS = ("rgb", "flow")  # appearance and motion, in this order wherever both appear


class ConfigError(StfnError, ValueError):
    """A configuration value a user wrote is wrong; the message names the key."""


@dataclass
class HeadConfig:
    """The temporal head that runs on per-frame features ``(B, T, C)``.

    Used by ``arch: stfn`` (Residual Inception stacks + fusion). ``arch: temporal_inception`` (Ma et al.
    2017, a fixed network: :mod:`stfn.models.temporal_inception`) reads only ``dropout``.
    """

    hidden_dim: int = 512  # channels inside the temporal blocks (input features are projected to it)
    blocks: int = 2  # Residual Inception blocks per stream
    kernel_sizes: list[int] = field(default_factory=lambda: [1, 3, 5])  # temporal branch lengths
    dilations: list[int] = field(default_factory=lambda: [1, 1, 1])  # one per kernel size
    pool_branch: bool = True  # extra branch: temporal max-pool (k=3) then 1x1 conv
    residual: bool = True  # the shortcut of the Residual Inception block
    downsample: bool = True  # halve T (max-pool, stride 2) after every block but the last
    fusion: str = "sum"  # none | sum | multiply | concat | gated
    fusion_direction: str = "motion_to_appearance"  # motion_to_appearance | appearance_to_motion | both
    fusion_place: str = "each"  # each (after every block) | end (after the last block only)
    pooling: str = "avg"  # avg | max | attention  (aggregation over time)
    dropout: float = 0.5  # before the classifier (temporal_inception: both of its dropouts; Ma et al.: 0.2)


@dataclass
class TSLSTMConfig:
    """The TS-LSTM head (``arch: ts_lstm``, Ma et al. 2017; :mod:`stfn.models.ts_lstm`). Defaults: the
    authors' code (``RNN/main.lua``, ``RNN/model.lua`` of chihyaoma/Activity-Recognition-with-CNN-and-RNN)."""

    segments: int = 3  # temporal segments: floor(T / segments) consecutive frames each (-numSegment)
    pooling: str = "max"  # max | mean: temporal pooling inside a segment (nn.Max; nn.Mean commented out)
    hidden_sizes: list[int] = field(default_factory=lambda: [512])  # stacked LSTMs over the segments (-hiddenSize)
    dropout: float = 0.0  # before the classifier (-dropout; 0: no Dropout layer)
    init_uniform: float = 0.1  # every parameter ~ U(-a, a) (-uniform); 0: PyTorch's default initialisation


@dataclass
class TLEConfig:
    """``arch: tle``: Temporal Linear Encoding (Diba et al. 2017), see :mod:`stfn.models.tle`."""

    segments: int = 3  # K: segments of the video, aggregated into one feature
    aggregation: str = "product"  # product | sum | max  (element-wise over the K segments; paper: product)
    dim: int = 8192  # d: Tensor Sketch (compact bilinear) dimension
    seed: int = 1  # of the fixed random hashes (saved in checkpoints as buffers)
    dropout: float = 0.8  # before each stream's classifier


@dataclass
class STResNetConfig:
    """``arch: st_resnet``: spatiotemporal ResNets (Feichtenhofer et al. 2016), see :mod:`stfn.models.st_resnet`."""

    connections: bool = True  # motion -> appearance residual connections into the 2nd unit of each stage
    temporal_convs: bool = True  # those units' 1x1 convs become 3x1x1 over frames (each tap W/3 at start)
    temporal_pool: bool = False  # stage 2: temporal max-pool (5 frames, stride 2) after the last stage
    dropout: float = 0.0  # before the per-frame classifiers (the authors train without dropout)


@dataclass
class ModelConfig:
    """The network: which architecture, which streams, which backbone."""

    arch: str = "stfn"  # stfn | tsn | temporal_inception | ts_lstm | tle | st_resnet (stfn.models.ARCHS)
    streams: list[str] = field(default_factory=lambda: ["rgb", "flow"])  # any non-empty subset
    num_classes: int = 101
    backbone: str = "resnet18"  # torchvision classifier name, or "timm:<name>" when timm is installed
    pretrained: bool = False  # ImageNet weights via torchvision weights API / timm (needs network once)
    flow_length: int = 5  # L: flow fields per stack; the motion stream takes 2L channels
    cross_modality_init: bool = True  # TSN: flow stem = channel mean of the RGB stem, replicated
    freeze_backbone: bool = False  # train only the head (features can then be cached)
    tsn_dropout: float = 0.8  # TSN per-stream dropout before the classifier
    fusion_weights: list[float] = field(default_factory=lambda: [1.0, 1.5])  # TSN/TLE late fusion rgb:flow
    fusion_rule: str = "logits"  # TSN late fusion: logits (TSN's weighted logit sum) | softmax (softmax mean)
    head: HeadConfig = field(default_factory=HeadConfig)
    ts_lstm: TSLSTMConfig = field(default_factory=TSLSTMConfig)  # arch: ts_lstm
    tle: TLEConfig = field(default_factory=TLEConfig)  # arch: tle
    st_resnet: STResNetConfig = field(default_factory=STResNetConfig)  # arch: st_resnet only


@dataclass
class DataConfig:
    """Where the data is and how a video becomes a sample."""

    dataset: str = "synthetic"  # synthetic | ucf101 | hmdb51 | list | folder
    root: str = ""  # prepared folder written by `stfn prepare` (frames, flow, manifest.json)
    splits: str = ""  # folder with the split files (ucfTrainTestlist, testTrainMulti_7030_splits, ...)
    split: int = 1
    train_list: str = ""  # dataset=list: MMAction2 rawframe list files
    test_list: str = ""
    class_names: str = ""  # optional file with one class name per line (list / folder datasets)
    frames: int = 8  # T: positions sampled over the whole video
    scale_size: int = 256  # short side after resizing, before cropping
    crop_size: int = 224  # network input side
    test_crops: int = 1  # 1 (centre) | 3 | 10 (TSN)
    color_jitter: float = 0.0  # brightness/contrast/saturation strength on RGB, 0 disables
    hflip: bool = True  # random horizontal flip in training (negates flow-x); off for mirror-pair classes
    on_missing: str = "error"  # error | skip: videos in the split list but not prepared
    features: str = ""  # folder of cached per-frame features (`stfn extract-features`); skips backbones
    num_workers: int = 2
    synthetic_preset: str = "small"  # dataset=synthetic: preset of the generator
    jpeg_decoder: str = "opencv"  # opencv | torchvision | pillow | nvjpeg (CUDA): decoder of the prepared JPEGs


@dataclass
class TrainConfig:
    """Optimisation and run-time settings."""

    epochs: int = 10
    batch_size: int = 8
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    backbone_lr_mult: float = 1.0  # learning-rate multiplier for the backbones
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 0.0
    milestones: list[int] = field(default_factory=lambda: [30, 60])  # schedule=step
    gamma: float = 0.1
    clip_grad: float = 40.0  # 0 disables
    label_smoothing: float = 0.0
    partial_bn: bool = False  # TSN: freeze all BatchNorm layers but the first of each backbone
    amp: str = "auto"  # auto | none | bf16 | fp16  (auto: CUDA bf16, or fp16 + loss scaling on GPUs without
    #                    bf16; CPU bf16 with channels_last, else fp32: CPU bf16 convs are slow without it)
    channels_last: bool = True
    compile: bool | str = "auto"  # auto | true | false (auto: runs long enough to repay it, stfn.runtime)
    accumulate: int = 1  # gradient accumulation steps
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    eval_every: int = 1
    save_every: int = 1  # last.pt every N epochs, at the last one and whenever best.pt changes (a kill loses < N)
    init_rgb: str = ""  # two-stage protocol: checkpoint of a single-stream RGB model
    init_flow: str = ""  # two-stage protocol: checkpoint of a single-stream flow model
    log_every: int = 10


@dataclass
class Config:
    name: str = "stfn"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert the safe cases (int -> float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has an unsupported type {_type_name(tp)}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{key}' (valid keys here: {', '.join(sorted(names))})"
            )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The whole tree as plain dicts and lists (YAML/JSON/checkpoint safe)."""
    return dataclasses.asdict(cfg)


# Numeric keys whose values PyTorch would refuse with a traceback, or take silently when they make no
# sense: key -> (lowest, highest, is the highest itself allowed). None: no bound on that side.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "train.lr": (0.0, None, True),  # > 0 (_POSITIVE)
    "train.backbone_lr_mult": (0.0, None, True),
    "train.momentum": (0.0, 1.0, False),
    "train.weight_decay": (0.0, None, True),
    "train.label_smoothing": (0.0, 1.0, False),
    "train.gamma": (0.0, None, True),
    "train.clip_grad": (0.0, None, True),
    "train.warmup_epochs": (0.0, None, True),
    "train.eval_every": (0.0, None, True),
    "train.save_every": (1.0, None, True),
    "train.log_every": (1.0, None, True),
    "data.num_workers": (0.0, None, True),
}
_POSITIVE = {"train.lr", "train.gamma"}  # strictly above their lowest value


def _check_ranges(cfg: Config) -> None:
    """One sentence naming the key and its allowed range for a value outside :data:`RANGES`."""
    for key, (low, high, high_ok) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        too_low = low is not None and (value <= low if key in _POSITIVE else value < low)
        too_high = high is not None and (value > high if high_ok else value >= high)
        if too_low or too_high:
            lo = f"> {low:g}" if key in _POSITIVE else f">= {low:g}"
            allowed = lo + (f" and {'<=' if high_ok else '<'} {high:g}" if high is not None else "")
            raise ConfigError(f"config key '{key}' must be {allowed}, got {value}")


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Build a :class:`Config` from a (partial) nested dict; missing keys take their defaults; values
    outside :data:`RANGES` are refused."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    cfg = _build(Config, data)
    _check_ranges(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.head.blocks=3"`` -> (["model", "head", "blocks"], 3); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=v`` strings to a nested dict (a copy); key validity is checked when building."""
    out = _merge({}, data)
    defaults = config_to_dict(Config())
    for text in overrides:
        path, value = parse_override(text)
        node, ref = out, defaults
        for i, part in enumerate(path[:-1]):
            if not isinstance(ref, dict) or part not in ref or not isinstance(ref[part], dict):
                raise ConfigError(f"unknown config key '{'.'.join(path[: i + 1])}' in override '{text}'")
            ref = ref[part]
            node = node.setdefault(part, {})
        last = path[-1]
        if not isinstance(ref, dict) or last not in ref:
            raise ConfigError(f"unknown config key '{'.'.join(path)}' in override '{text}'")
        if isinstance(ref[last], str) and not isinstance(value, str):  # 2024, yes, 1.5 stay as written
            value = text.split("=", 1)[1].strip()
        # A string like "1,3,5" for a list key is a convenient spelling of [1, 3, 5].
        if isinstance(ref[last], list) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [yaml.safe_load(v) for v in str(value).split(",") if v.strip()]
        node[last] = value
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if given), then ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{p}' does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file '{p}' is not UTF-8 text (byte {e.start}: {e.reason}); save it as "
                              "UTF-8") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{p}' is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file '{p}' must hold a mapping of sections (model, data, train)")
        data = loaded
    data = apply_overrides(data, list(overrides or []))
    try:
        return config_from_dict(data)
    except ConfigError as e:
        if path is not None:
            raise ConfigError(f"{e} (in '{path}' or its overrides)") from None
        raise


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
