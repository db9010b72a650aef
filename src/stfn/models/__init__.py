"""The STFN model family: per-frame backbones, Residual Inception temporal blocks, fusion connections,
and the STFN / TSN / Temporal-Inception / TS-LSTM / TLE / ST-ResNet networks. Entry point: :func:`build_model`."""

from stfn.models.backbone import FrameBackbone, SmallCNN, adapt_stem, build_backbone, find_stem
from stfn.models.fusion import FusionConnection
from stfn.models.heads import Stage, STFNHead, TSNHead
from stfn.models.network import VideoNetwork
from stfn.models.st_resnet import STResNet
from stfn.models.stfn import ARCHS, TSN, TwoStreamNet, build_model, check_model_config
from stfn.models.temporal import ResidualInceptionBlock, TemporalPool
from stfn.models.temporal_inception import TemporalInceptionHead
from stfn.models.tle import TensorSketch, TLEHead
from stfn.models.ts_lstm import TSLSTMHead

__all__ = [
    "ARCHS",
    "TSN",
    "FrameBackbone",
    "FusionConnection",
    "ResidualInceptionBlock",
    "STFNHead",
    "SmallCNN",
    "STResNet",
    "Stage",
    "TSLSTMHead",
    "TLEHead",
    "TSNHead",
    "TemporalInceptionHead",
    "TemporalPool",
    "TensorSketch",
    "TwoStreamNet",
    "VideoNetwork",
    "adapt_stem",
    "build_backbone",
    "build_model",
    "check_model_config",
    "find_stem",
]
