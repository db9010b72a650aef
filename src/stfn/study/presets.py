"""What ``stfn demo`` and ``stfn compare`` train, per preset, and the models' names (no torch import: the
CLI reads the preset names when it builds its parser)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMPARE_PRESETS", "E2E_MODEL", "HEADS", "MODELS", "PRESETS", "ComparePreset", "DemoPreset"]


@dataclass(frozen=True)
class DemoPreset:
    """What the demo generates and trains (README, "What `make demo` shows", has the times)."""

    synthetic: str  # preset of the generator
    frames: int  # T: positions per video for the backbones and the heads
    feature_frames: int  # positions cached per video (heads sample T of them: one per segment)
    flow_length: int  # L
    backbone_epochs: int
    backbone_lr: float
    head_epochs: int
    head_lr: float
    head_hidden: int  # model.head.hidden_dim of the STFN / Temporal-Inception heads
    batch_size: int
    workers: int
    e2e_epochs: int  # --end-to-end: STFN fine-tuned from the TSN backbones
    head_seeds: int  # each head trains with seeds seed, seed+1, ...: the table gives mean ± std


PRESETS: dict[str, DemoPreset] = {
    # the test's smoke run: the generator's tiny preset (8 classes, 32x32), one epoch per backbone
    "tiny": DemoPreset("tiny", frames=4, feature_frames=4, flow_length=2, backbone_epochs=1, backbone_lr=1e-3,
                       head_epochs=2, head_lr=1e-3, head_hidden=32, batch_size=8, workers=0, e2e_epochs=1,
                       head_seeds=2),
    # the demo: the generator's small preset (14 classes, 64x64), about 3 minutes on an idle 2-core CPU
    "small": DemoPreset("small", frames=8, feature_frames=16, flow_length=5, backbone_epochs=10, backbone_lr=1e-3,
                        head_epochs=30, head_lr=1e-3, head_hidden=256, batch_size=16, workers=1, e2e_epochs=20,
                        head_seeds=3),
}

# Display name -> run folder, in table order.
MODELS: dict[str, str] = {
    "TSN RGB": "tsn_rgb",
    "TSN flow": "tsn_flow",
    "TSN two-stream": "tsn_two_stream",
    "TSN (cached features)": "tsn_features",
    "Temporal-Inception": "temporal_inception",
    "TS-LSTM": "ts_lstm",
    "TLE": "tle",
    "STFN (no fusion)": "stfn_nofusion",
    "STFN": "stfn",
}
# The heads trained on the cached features (step 6): display name -> (model.arch, model.head.fusion);
# "fusion" is STFN's connection ("default": the base config's), unused by the other heads.
HEADS: dict[str, tuple[str, str]] = {
    "TSN (cached features)": ("tsn", "none"),
    "Temporal-Inception": ("temporal_inception", "none"),
    "TS-LSTM": ("ts_lstm", "none"),
    "TLE": ("tle", "none"),
    "STFN (no fusion)": ("stfn", "none"),
    "STFN": ("stfn", "default"),
}
E2E_MODEL = "STFN (end-to-end)"  # added by ``stfn demo --end-to-end``


@dataclass(frozen=True)
class ComparePreset:
    """What ``stfn compare`` prepares and trains on the user's data (the fields :mod:`stfn.study.pipeline`
    reads, as in :class:`DemoPreset`, plus the backbone and the frame size)."""

    backbone: str  # model.backbone of the TSN streams (the heads train on its features)
    pretrained: bool  # ImageNet weights (torchvision / timm); cnn_small has none
    size: int  # frames are prepared at this short side, and cropped to size x size
    frames: int
    feature_frames: int
    flow_length: int
    backbone_epochs: int
    backbone_lr: float
    head_epochs: int
    head_lr: float
    head_hidden: int
    batch_size: int
    workers: int
    e2e_epochs: int
    head_seeds: int


COMPARE_PRESETS: dict[str, ComparePreset] = {
    # the tests' smoke run: a few minutes of nothing but plumbing
    "tiny": ComparePreset("cnn_small", False, 32, frames=4, feature_frames=4, flow_length=2, backbone_epochs=1,
                          backbone_lr=1e-3, head_epochs=2, head_lr=1e-3, head_hidden=32, batch_size=4, workers=0,
                          e2e_epochs=1, head_seeds=2),
    # small data on a CPU (the Weizmann run of the README: 48 training videos, 64x64, minutes on 2 cores)
    "quick": ComparePreset("cnn_small", False, 64, frames=8, feature_frames=16, flow_length=5, backbone_epochs=40,
                           backbone_lr=1e-3, head_epochs=40, head_lr=1e-3, head_hidden=256, batch_size=8, workers=1,
                           e2e_epochs=20, head_seeds=3),
    # ImageNet ResNet-18 backbones at 112 px: a GPU, or hours on a CPU for a UCF101-sized set
    "standard": ComparePreset("resnet18", True, 112, frames=8, feature_frames=16, flow_length=5, backbone_epochs=20,
                              backbone_lr=3e-4, head_epochs=40, head_lr=1e-3, head_hidden=512, batch_size=16,
                              workers=2, e2e_epochs=10, head_seeds=3),
}
