"""Two-stream networks (STFN and the baselines: TSN, Temporal-Inception, TS-LSTM, TLE, ST-ResNet) and
:func:`build_model`.

Every network is a :class:`TwoStreamNet`: a per-frame backbone per stream (``backbones``) and a head
on the per-frame features. Batches are dicts::

    {"rgb": (B, T, 3, H, W), "flow": (B, T, 2L, H, W)}        raw frames / flow stacks, or
    {"rgb_feat": (B, T, C), "flow_feat": (B, T, C)}            cached backbone features

A single-stream network needs only its own key. Nothing assumes a batch size, so test views can be
flattened into the batch dimension ``(B*V, T, ...)``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from stfn import runtime
from stfn.config import STREAMS, ConfigError, HeadConfig, ModelConfig, TSLSTMConfig
from stfn.errors import StfnError
from stfn.models.backbone import FrameBackbone, adapt_stem, build_rgb_network
from stfn.models.fusion import DIRECTIONS, FUSION_OPS, FUSION_RULES
from stfn.models.heads import STFNHead, TSNHead
from stfn.models.network import VideoNetwork
from stfn.models.st_resnet import STResNet, check_st_resnet_config
from stfn.models.temporal import POOLINGS
from stfn.models.temporal_inception import TemporalInceptionHead
from stfn.models.tle import TLEHead, check_tle_config
from stfn.models.ts_lstm import POOLINGS as TS_LSTM_POOLINGS
from stfn.models.ts_lstm import TSLSTMHead

__all__ = ["ARCHS", "TSN", "TwoStreamNet", "build_model", "check_fusion_weights", "check_model_config"]


class TwoStreamNet(VideoNetwork):
    """Backbones per stream + a head on the per-frame features.

    Attributes: ``backbones`` (``nn.ModuleDict`` keyed by stream; empty for a head-only model),
    ``head``, ``streams`` (subset of ``["rgb", "flow"]``, in that order), ``feature_dim`` (C),
    ``flow_length`` (L), ``freeze_backbone`` (see :meth:`freeze_backbones`).
    """

    def __init__(
        self,
        backbones: dict[str, FrameBackbone],
        head: nn.Module,
        streams: list[str],
        feature_dim: int,
        flow_length: int = 5,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        self.backbones = nn.ModuleDict(backbones)
        self.head = head
        self.streams = list(streams)
        self.feature_dim = feature_dim
        self.flow_length = flow_length
        self.freeze_backbone = False
        if freeze_backbone:
            self.freeze_backbones()

    def freeze_backbones(self) -> None:
        """Train only the head: the backbones' parameters get no gradients, the backbones run without
        autograd and :meth:`train` keeps them in eval mode (frozen BatchNorm statistics, so their
        features can be cached). The one implementation of backbone freezing."""
        self.freeze_backbone = True
        self.backbones.requires_grad_(False)

    def train(self, mode: bool = True) -> TwoStreamNet:
        super().train(mode)
        if self.freeze_backbone:
            self.backbones.eval()  # frozen means frozen BatchNorm statistics too (cacheable features)
        return self

    def _frames_to_features(self, stream: str, x: torch.Tensor) -> torch.Tensor:
        channels = 3 if stream == "rgb" else 2 * self.flow_length
        if x.dim() != 5 or x.shape[2] != channels:
            hint = "" if stream == "rgb" else f" (model.flow_length={self.flow_length})"
            raise StfnError(
                f"batch['{stream}'] must have shape (B, T, {channels}, H, W){hint}, got {tuple(x.shape)}"
            )
        if stream not in self.backbones:
            raise StfnError(f"this model has no {stream} backbone; pass cached features as '{stream}_feat'")
        b, t = x.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            f = self.backbones[stream](x.flatten(0, 1))
        return f.reshape(b, t, -1)

    def forward_features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-frame backbone features ``{"<stream>_feat": (B, T, C)}``; cached features pass through."""
        out = {}
        for s in self.streams:
            key = f"{s}_feat"
            if key in batch:
                f = batch[key]
                if f.dim() != 3 or f.shape[2] != self.feature_dim:
                    raise StfnError(
                        f"batch['{key}'] must have shape (B, T, {self.feature_dim}) for backbone "
                        f"features of this model, got {tuple(f.shape)}"
                    )
                out[key] = f
            elif s in batch:
                out[key] = self._frames_to_features(s, batch[s])
            else:
                raise StfnError(f"the batch has neither '{s}' nor '{key}', needed by the {s} stream")
        return out

    def forward_head(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, num_classes)`` from per-frame features ``{"<stream>_feat": (B, T, C)}``.

        Under CPU bfloat16 autocast the head runs in bfloat16 where the CPU has it in hardware
        (AVX512-BF16, AMX: the STFN head's training step at T=25, 2048-d, 1.38x faster than in float32,
        BENCHMARKS.md) and in float32 where it has not: on AVX2 its bf16 matrix products are emulated,
        ~10x slower than float32 (``benchmarks/head_speed.py``, ``bf16-head`` rows).
        """
        if (torch.is_autocast_enabled("cpu") and any(f.device.type == "cpu" for f in features.values())
                and not runtime.cpu_supports_bf16()):
            with torch.autocast("cpu", enabled=False):
                return self.head({k: v.float() for k, v in features.items()})
        return self.head(features)


class TSN(TwoStreamNet):
    """Temporal Segment Networks baseline; :meth:`forward` fuses :meth:`stream_logits` (see TSNHead)."""

    def stream_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{stream: (B, K)}`` average-consensus logits per stream, from per-frame features."""
        return self.head.stream_logits(features)


def _stfn_head(cfg: ModelConfig, dim: int, streams: list[str]) -> nn.Module:
    return STFNHead(dim, cfg.num_classes, streams, cfg.head)


def _tsn_head(cfg: ModelConfig, dim: int, streams: list[str]) -> nn.Module:
    weights = dict(zip(STREAMS, cfg.fusion_weights, strict=True))
    return TSNHead(dim, cfg.num_classes, streams, cfg.tsn_dropout, weights, cfg.fusion_rule)


def _temporal_inception_head(cfg: ModelConfig, dim: int, streams: list[str]) -> nn.Module:
    return TemporalInceptionHead(dim, cfg.num_classes, streams, cfg.head.dropout)  # Ma et al.: no other head key


def _ts_lstm_head(cfg: ModelConfig, dim: int, streams: list[str]) -> nn.Module:
    return TSLSTMHead(dim, cfg.num_classes, streams, cfg.ts_lstm)


def _tle_head(cfg: ModelConfig, dim: int, streams: list[str]) -> nn.Module:
    weights = dict(zip(STREAMS, cfg.fusion_weights, strict=True))
    return TLEHead(dim, cfg.num_classes, streams, cfg.tle, weights, cfg.fusion_rule)


def _st_resnet_head(cfg: ModelConfig, dim: int, streams: list[str]) -> nn.Module:
    # the authors' test score: the plain mean of the streams' raw classifier outputs (cnn_train_dag.m)
    return TSNHead(dim, cfg.num_classes, streams, cfg.st_resnet.dropout, {"rgb": 1.0, "flow": 1.0}, "logits")


# `model.arch` -> (network class, head builder): the one registry of architectures.
ARCHS = {
    "stfn": (TwoStreamNet, _stfn_head),
    "tsn": (TSN, _tsn_head),
    "temporal_inception": (TwoStreamNet, _temporal_inception_head),
    "ts_lstm": (TwoStreamNet, _ts_lstm_head),
    "tle": (TSN, _tle_head),  # TSN's class for its stream_logits: TLE also fuses per-stream scores late
    "st_resnet": (STResNet, _st_resnet_head),  # joins its backbones itself (model.st_resnet)
}


def _check_kernels(key: str, kernels: list[int]) -> None:
    if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
        raise ConfigError(f"config key '{key}' must be a non-empty list of odd lengths >= 1, got {kernels}")


def _check_head(h: HeadConfig) -> None:
    choices = {"fusion": tuple(FUSION_OPS), "fusion_direction": DIRECTIONS, "fusion_place": ("each", "end"),
               "pooling": POOLINGS}
    for key, allowed in choices.items():
        if getattr(h, key) not in allowed:
            raise ConfigError(f"config key 'model.head.{key}' must be one of {', '.join(allowed)}, got {getattr(h, key)!r}")
    if h.hidden_dim < 1:
        raise ConfigError(f"config key 'model.head.hidden_dim' must be >= 1, got {h.hidden_dim}")
    if h.blocks < 0:
        raise ConfigError(f"config key 'model.head.blocks' must be >= 0, got {h.blocks}")
    _check_kernels("model.head.kernel_sizes", h.kernel_sizes)
    if any(d < 1 for d in h.dilations) or (
        len(h.dilations) != len(h.kernel_sizes) and not all(d == 1 for d in h.dilations)
    ):
        raise ConfigError(
            f"config key 'model.head.dilations' needs one value >= 1 per kernel size "
            f"({len(h.kernel_sizes)} for {h.kernel_sizes}), got {h.dilations}"
        )
    if not 0.0 <= h.dropout < 1.0:
        raise ConfigError(f"config key 'model.head.dropout' must be in [0, 1), got {h.dropout}")


def _check_ts_lstm(c: TSLSTMConfig) -> None:
    if c.segments < 1:
        raise ConfigError(f"config key 'model.ts_lstm.segments' must be >= 1, got {c.segments}")
    if c.pooling not in TS_LSTM_POOLINGS:
        raise ConfigError(f"config key 'model.ts_lstm.pooling' must be one of {', '.join(TS_LSTM_POOLINGS)}, got {c.pooling!r}")
    if not c.hidden_sizes or any(h < 1 for h in c.hidden_sizes):
        raise ConfigError(f"config key 'model.ts_lstm.hidden_sizes' must be a non-empty list of sizes >= 1, got {c.hidden_sizes}")
    if not 0.0 <= c.dropout < 1.0:
        raise ConfigError(f"config key 'model.ts_lstm.dropout' must be in [0, 1), got {c.dropout}")
    if c.init_uniform < 0:
        raise ConfigError(f"config key 'model.ts_lstm.init_uniform' must be >= 0, got {c.init_uniform}")


def check_fusion_weights(weights: Sequence[float], streams: Sequence[str] = STREAMS,
                         what: str = "config key 'model.fusion_weights'") -> None:
    """Late-fusion weights (TSN, TLE, ``stfn eval --fusion-weights``): two, rgb then flow, each >= 0,
    with a positive sum over ``streams`` (a model's; default both). ``what`` names the setting in the
    error."""
    w = list(weights)
    if len(w) != 2 or any(x < 0 for x in w) or sum(w[STREAMS.index(s)] for s in set(streams)) <= 0:
        raise ConfigError(f"{what} must be two weights >= 0 (rgb, flow) with a positive sum, got "
                          f"{' '.join(f'{x:g}' for x in w)}")


def check_model_config(cfg: ModelConfig) -> list[str]:
    """Validate ``cfg``; return its streams in canonical order (rgb, flow). Errors name the key."""
    if cfg.arch not in ARCHS:
        raise ConfigError(f"config key 'model.arch' must be one of {', '.join(ARCHS)}, got {cfg.arch!r}")
    bad = [s for s in cfg.streams if s not in STREAMS]
    if not cfg.streams or bad or len(set(cfg.streams)) != len(cfg.streams):
        raise ConfigError(f"config key 'model.streams' must be a non-empty subset of [rgb, flow], got {cfg.streams}")
    for key in ("num_classes", "flow_length"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"config key 'model.{key}' must be >= 1, got {getattr(cfg, key)}")
    if not cfg.backbone:
        raise ConfigError("config key 'model.backbone' is empty")
    if not 0.0 <= cfg.tsn_dropout < 1.0:
        raise ConfigError(f"config key 'model.tsn_dropout' must be in [0, 1), got {cfg.tsn_dropout}")
    check_fusion_weights(cfg.fusion_weights, cfg.streams)
    if cfg.fusion_rule not in FUSION_RULES:
        raise ConfigError(f"config key 'model.fusion_rule' must be one of {', '.join(FUSION_RULES)}, "
                          f"got {cfg.fusion_rule!r}")
    _check_head(cfg.head)
    _check_ts_lstm(cfg.ts_lstm)
    check_tle_config(cfg.tle)
    if cfg.arch == "st_resnet":
        check_st_resnet_config(cfg)
    return [s for s in STREAMS if s in cfg.streams]


def build_model(cfg: ModelConfig, *, with_backbones: bool = True) -> VideoNetwork:
    """The network described by ``cfg`` (``model`` section of the config).

    The RGB-initialised backbone (ImageNet weights with ``cfg.pretrained``, else its own random
    initialisation) is built once; the flow stream gets a copy whose first convolution takes ``2L``
    channels (cross-modality initialisation with ``cfg.cross_modality_init``). So both streams start
    from the same weights, as in TSN. ``with_backbones=False`` builds a head-only model that takes
    cached features (``rgb_feat`` / ``flow_feat``); its ``backbones`` is empty.
    """
    streams = check_model_config(cfg)
    net_cls, head_builder = ARCHS[cfg.arch]
    if with_backbones:
        rgb = build_rgb_network(cfg.backbone, cfg.pretrained)
        backbones: dict[str, FrameBackbone] = {}
        if "flow" in streams:
            flow = rgb if "rgb" not in streams else copy.deepcopy(rgb)
            backbones["flow"] = adapt_stem(flow, 2 * cfg.flow_length, cfg.cross_modality_init)
        if "rgb" in streams:
            backbones["rgb"] = rgb
        backbones = {s: backbones[s] for s in streams}
        dim = rgb.feature_dim
    else:
        try:
            with torch.device("meta"):  # only to learn the feature size; costs no memory
                dim = build_rgb_network(cfg.backbone, False).feature_dim
        except (RuntimeError, NotImplementedError):  # a network whose constructor needs real tensors
            dim = build_rgb_network(cfg.backbone, False).feature_dim
        backbones = {}
    head = head_builder(cfg, dim, streams)
    extra = {"options": cfg.st_resnet} if cfg.arch == "st_resnet" else {}
    net = net_cls(backbones, head, streams, dim, cfg.flow_length, cfg.freeze_backbone, **extra)
    net.config = copy.deepcopy(cfg)
    return net
