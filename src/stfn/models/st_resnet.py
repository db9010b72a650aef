"""Spatiotemporal ResNets (Feichtenhofer, Pinz & Wildes, NeurIPS 2016): ``model.arch: st_resnet``.

Two torchvision ResNets, appearance on RGB frames and motion on ``2L``-channel flow stacks, built as every
stfn backbone is (:func:`~stfn.models.backbone.build_rgb_network`, ImageNet weights with
``model.pretrained``, the flow stem by cross-modality initialisation), joined *inside* the backbones and
trained end to end: the fusion that STFN's fusion in the head competes with. Read from the authors' code,
GitHub ``feichtenhofer/st-resnet`` (MatConvNet) and its MatConvNet fork ``feichtenhofer/matconvnet``:

- **Cross-stream residual connections** (``STResNet_stage1.m``: ``fusionLayer`` = res2a, res3a, res4a,
  res5a; ``fuseInto='spatial'``, ``fuseFrom='temporal'``, ``doSum=1``, ``doScale=0``,
  ``doBiDirectional=0``). Motion -> appearance only, a plain sum without parameters, one per stage: the
  motion stream's output of the stage's first unit after its ReLU (``res{k}a_relu``) is added to the
  appearance stream's output of that unit *before* its ReLU (``res{k}a``); the sum is inserted after
  ``res{k}a_relu`` and feeds the layer after it, ``res{k}b_branch2a``: the *residual branch* of the
  stage's second unit. That unit's identity shortcut keeps the appearance stream's own ReLU output::

      x_a(next) = relu(pre_a) + F_a(pre_a + relu(pre_m))          pre = a unit's output before its ReLU

  In torchvision names: motion ``layer{k}[0]`` -> residual branch of appearance ``layer{k}[1]``, k = 1..4.
  The rule for every depth (resnet18/34/50/101/152): the second unit of each of the four stages, 4
  connections, which is the code's placement at ResNet-50 and at ResNet-152 alike (both have res{k}a).
- **Temporal convolutions** (``addConv3D=1``): each 1x1, stride-1 convolution whose name contains
  ``b_branch2a`` or ``b_branch2c``, i.e. the first and last 1x1 convs of the units that receive a
  connection, in *both* streams, becomes a ``dagnn.ConvTime`` (fork, ``matlab/+dagnn/ConvTime.m``):
  kernel 3 over the frames of a clip, zero padding 1, stride 1, initialised with the 1x1 kernel ``W``
  divided by 3 at every tap (``cat(2, W/3, W/3, W/3)``). Here :class:`TemporalConv` on ``conv1`` and
  ``conv3`` of ``layer{k}[1]``: 8 per stream for the Bottleneck ResNets (50/101/152); BasicBlock
  ResNets (18/34) have no 1x1 convs in their branches, so none (the code converts 1x1 kernels only).
  At ResNet-152 the script's name pattern, applied to the Caffe names (res3b1, res4b1, ...), would hit only
  res2b and res5b; we apply the ResNet-50 rule to all four stages.
- **Stage 2** (``STResNet_stage2.m``, ``addPool3D=1``): a temporal max-pool (``dagnn.PoolTime``, 5
  frames, stride 2, no padding) on ``res5c_relu`` of both streams, before the spatial average pool:
  ``model.st_resnet.temporal_pool`` (kernel ``min(5, T)``, so that shorter clips run).
- **Classifier and scores**: each stream keeps its own classifier (its ``prediction`` layer) at every
  remaining time position, without dropout (``dropOutRatio=0`` removes it); the test score
  (``cnn_train_dag.m``, ``processEpoch``) is the mean over the streams' classifier outputs (pre-softmax),
  the positions in time and the views: :class:`~stfn.models.heads.TSNHead` with equal weights and
  TSN's logit rule (``late_fusion``: the mean of the logits).

Not as the authors: they minimise a softmax loss on every frame's classifier output in each stream (the
video's label replicated over the frames, ``dagnn.Loss`` of the fork; ``derOutputs`` of both streams' loss
layers), summed over frames and streams; stfn's training loop minimises one cross-entropy on
:meth:`STResNet.forward`, here on the fused logits (the authors' test score). torchvision ResNets are
v1.5 (stride 2 on the 3x3 conv of a stage's first unit; the authors' Caffe ResNets stride its first 1x1);
the units with temporal convs have stride 1 in both. A 1x1 -> 3-tap weight does not load from a per-frame
(TSN) checkpoint, so ``train.init_rgb`` / ``init_flow`` take ST-ResNet checkpoints (stage 2 from stage 1), or
TSN ones with ``model.st_resnet.temporal_convs: false``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stfn.config import STREAMS, ConfigError, ModelConfig, STResNetConfig
from stfn.errors import StfnError
from stfn.models.backbone import FrameBackbone
from stfn.models.network import VideoNetwork

__all__ = [
    "RESNETS",
    "ResNetStream",
    "STResNet",
    "TemporalConv",
    "check_st_resnet_config",
    "run_unit",
]

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
STAGES = ("layer1", "layer2", "layer3", "layer4")  # torchvision's conv2_x .. conv5_x (res2 .. res5)
POOL_FRAMES, POOL_STRIDE = 5, 2  # stage 2: PoolTime poolSize [1 5], stride [1 2]
_END_TO_END = (
    "arch st_resnet runs end to end only: the motion stream feeds the appearance stream inside the "
    "backbones, so there are no per-stream features to cache and no frozen backbones to train a head on"
)


def check_st_resnet_config(cfg: ModelConfig) -> None:
    """The keys ``arch: st_resnet`` needs (called by :func:`~stfn.models.stfn.check_model_config`)."""
    if cfg.backbone not in RESNETS:
        raise ConfigError(
            f"config key 'model.backbone' must be a torchvision ResNet ({', '.join(RESNETS)}) for arch "
            f"st_resnet (its connections join the residual units of two ResNets), got {cfg.backbone!r}"
        )
    if sorted(cfg.streams) != sorted(STREAMS):
        raise ConfigError(
            f"config key 'model.streams' must be [rgb, flow] for arch st_resnet (the motion stream feeds "
            f"the appearance stream), got {cfg.streams}"
        )
    if cfg.freeze_backbone:
        raise ConfigError(f"config key 'model.freeze_backbone' must be false: {_END_TO_END}")
    if not 0.0 <= cfg.st_resnet.dropout < 1.0:
        raise ConfigError(f"config key 'model.st_resnet.dropout' must be in [0, 1), got {cfg.st_resnet.dropout}")


class TemporalConv(nn.Module):
    """A 1x1 ``nn.Conv2d`` made temporal (the authors' ``ConvTime``): ``(B*T, C_in, H, W) -> (B*T, C_out, H, W)``.

    Kernel 3 over the ``T = frames`` frames of each clip (a clip's frames adjacent in the batch dimension, as
    ``(B, T, ...).flatten(0, 1)`` lays them out), zero padding 1 at the clip's ends, stride 1, the conv's
    bias (none in a ResNet). ``weight`` ``(C_out, C_in, 3, 1)`` starts as ``W / 3`` at each tap: on a clip
    of equal frames it gives the 1x1 conv's output, 2/3 of it at the two end frames. As ``ConvTime``, it is a
    2D convolution over ``(T, H*W)`` with a ``3 x 1`` kernel (a 4D weight, so the network can be
    channels_last).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise StfnError(f"only a 1x1, stride-1, ungrouped convolution can be made temporal, got {conv}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        with torch.no_grad():
            weight = conv.weight.detach().repeat(1, 1, 3, 1) / 3  # (C_out, C_in, 3, 1)
        self.weight = nn.Parameter(weight)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        n, c, h, w = x.shape
        if frames < 1 or n % frames:
            raise StfnError(f"{n} feature maps are not whole clips of {frames} frames (temporal convolution)")
        clips = x.reshape(n // frames, frames, c, h * w).transpose(1, 2)  # (B, C, T, H*W)
        y = F.conv2d(clips, self.weight, self.bias, padding=(1, 0))
        return y.transpose(1, 2).reshape(n, self.out_channels, h, w)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 1) over (T, H*W), padding=(1, 0), "
                f"bias={self.bias is not None}")


def _conv(layer: nn.Module, x: torch.Tensor, frames: int) -> torch.Tensor:
    return layer(x, frames) if isinstance(layer, TemporalConv) else layer(x)


def run_unit(
    block: nn.Module, x: torch.Tensor, frames: int = 1, branch: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One torchvision residual unit (``BasicBlock`` or ``Bottleneck``): ``(pre, relu(pre))``, ``(N, C, H, W)``.

    ``pre = F(branch) + shortcut(x)``: the residual branch ``F`` takes ``branch`` when given (a cross-stream
    connection), else ``x``; the shortcut (identity, or ``downsample``) always takes ``x``. Without
    ``branch`` and temporal convs this is the unit's own ``forward``, its final ReLU split off.
    """
    h = x if branch is None else branch
    if hasattr(block, "conv3"):  # Bottleneck: 1x1, 3x3, 1x1
        h = block.relu(block.bn1(_conv(block.conv1, h, frames)))
        h = block.relu(block.bn2(block.conv2(h)))
        h = block.bn3(_conv(block.conv3, h, frames))
    else:  # BasicBlock: 3x3, 3x3
        h = block.relu(block.bn1(block.conv1(h)))
        h = block.bn2(block.conv2(h))
    pre = h + (x if block.downsample is None else block.downsample(x))
    return pre, F.relu(pre)


class ResNetStream(FrameBackbone):
    """One stream of ST-ResNet: a torchvision ResNet that runs segment by segment, so the other stream can
    join between segments. It holds the :class:`FrameBackbone`'s own modules (``net``, same state_dict keys;
    with ``temporal_convs`` ``conv1``/``conv3`` of each ``targets`` unit are :class:`TemporalConv` s).

    ``targets``: the second unit of each stage (``layer{k}.1``), the units a connection enters; ``sources``:
    the first unit of each stage (``layer{k}.0``), where the motion features leave. Segment 0 is the stem and
    ``layer1[0]``; segment ``i = 1..4`` starts at ``targets[i-1]`` and runs to ``sources[i]`` (inclusive),
    the last one to the end of ``layer4``.
    """

    def __init__(self, backbone: FrameBackbone, temporal_convs: bool = True) -> None:
        super().__init__(backbone.net, backbone.name, backbone.feature_dim, backbone.in_channels, backbone.stem_name)
        net = backbone.net
        stages = [getattr(net, s, None) for s in STAGES]
        if not hasattr(net, "maxpool") or not all(isinstance(s, nn.Sequential) and len(s) >= 2 for s in stages):
            raise ConfigError(
                f"model.backbone '{backbone.name}' is not a torchvision ResNet; arch st_resnet needs one of "
                f"{', '.join(RESNETS)}"
            )
        self.sources = [f"{s}.0" for s in STAGES]
        self.targets = [f"{s}.1" for s in STAGES]
        self.temporal_convs: list[str] = []
        if temporal_convs:
            for name in self.targets:
                unit = net.get_submodule(name)
                for conv in ("conv1", "conv3") if hasattr(unit, "conv3") else ():
                    setattr(unit, conv, TemporalConv(getattr(unit, conv)))
                    self.temporal_convs.append(f"{name}.{conv}")
        starts = [sum(len(s) for s in stages[:k]) for k in range(len(stages))]
        self.bounds = [0] + [start + 1 for start in starts] + [sum(len(s) for s in stages)]

    @property
    def units(self) -> list[nn.Module]:
        """The residual units of the four stages, in order."""
        return [u for s in STAGES for u in getattr(self.net, s)]

    @property
    def num_segments(self) -> int:
        return len(self.bounds) - 1

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, frames: int = 1, segment: int | None = None, branch: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``segment=None``: the stream alone, ``(N, C_in, H, W) -> (N, feature_dim)`` (``N`` whole clips of
        ``frames`` frames). ``segment=i``: segment ``i`` on ``x`` (frames for ``i = 0``, else the previous
        segment's output maps) -> ``(pre, out)`` of its last unit; ``branch`` is the residual-branch input of
        its first unit (a connection, ``i >= 1``)."""
        if segment is None:
            for i in range(self.num_segments):
                _, x = self.run_segment(x, frames, i)
            return x.mean(dim=(2, 3))
        return self.run_segment(x, frames, segment, branch)

    def run_segment(
        self, x: torch.Tensor, frames: int, segment: int, branch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= segment < self.num_segments or (segment == 0 and branch is not None):
            raise StfnError(f"segment {segment} of {self.num_segments} (a branch input only for segments >= 1)")
        net, pre = self.net, x
        if segment == 0:
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        units = self.units
        for j in range(self.bounds[segment], self.bounds[segment + 1]):
            pre, x = run_unit(units[j], x, frames, branch if j == self.bounds[segment] else None)
        return pre, x


class STResNet(VideoNetwork):
    """Spatiotemporal ResNet: two :class:`ResNetStream` s with motion -> appearance connections.

    The interface of :class:`~stfn.models.stfn.TwoStreamNet` (``forward``, ``forward_features``,
    ``forward_head``, ``stream_logits``, ``reset_classifier``, ``backbones``, ``streams``, ``feature_dim``,
    ``flow_length``), end to end only: cached features, a head-only model and frozen backbones are refused.
    ``backbones`` are the per-stream :class:`FrameBackbone` s of :func:`~stfn.models.build_model` (flow stem
    already adapted); ``options`` is ``model.st_resnet``.
    """

    def __init__(
        self,
        backbones: dict[str, FrameBackbone],
        head: nn.Module,
        streams: Sequence[str],
        feature_dim: int,
        flow_length: int = 5,
        freeze_backbone: bool = False,
        options: STResNetConfig | None = None,
    ) -> None:
        super().__init__()
        opts = options or STResNetConfig()
        if freeze_backbone:
            raise ConfigError(f"config key 'model.freeze_backbone' must be false: {_END_TO_END}")
        if list(streams) != list(STREAMS):
            raise ConfigError(f"config key 'model.streams' must be [rgb, flow] for arch st_resnet, got {list(streams)}")
        if set(backbones) != set(STREAMS):
            raise ConfigError(f"arch st_resnet has no head-only model (config key 'data.features'): {_END_TO_END}")
        self.backbones = nn.ModuleDict({s: ResNetStream(backbones[s], opts.temporal_convs) for s in STREAMS})
        self.head = head
        self.streams = list(STREAMS)
        self.feature_dim = feature_dim
        self.flow_length = flow_length
        self.freeze_backbone = False
        self.use_connections = opts.connections
        self.temporal_pool = opts.temporal_pool

    @property
    def connections(self) -> list[tuple[str, str]]:
        """``(motion unit, appearance unit)`` per connection: the motion stream's output of the first leaves
        the second's residual branch (unit names inside ``backbones[s].net``); empty when switched off."""
        rgb = self.backbones["rgb"]
        return list(zip(rgb.sources, rgb.targets, strict=True)) if self.use_connections else []

    def freeze_backbones(self) -> None:
        raise ConfigError(f"config keys 'model.freeze_backbone' and 'data.features' cannot be used: {_END_TO_END}")

    def _inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        for key in ("rgb_feat", "flow_feat"):
            if key in batch:
                raise StfnError(f"batch['{key}']: cached features (config key 'data.features') cannot be used: {_END_TO_END}")
        shapes = {"rgb": 3, "flow": 2 * self.flow_length}
        for s, channels in shapes.items():
            if s not in batch:
                raise StfnError(f"the batch has no '{s}', needed by the {s} stream of arch st_resnet")
            x = batch[s]
            if x.dim() != 5 or x.shape[2] != channels:
                hint = "" if s == "rgb" else f" (model.flow_length={self.flow_length})"
                raise StfnError(f"batch['{s}'] must have shape (B, T, {channels}, H, W){hint}, got {tuple(x.shape)}")
        rgb, flow = batch["rgb"], batch["flow"]
        if rgb.shape[:2] != flow.shape[:2] or rgb.shape[3:] != flow.shape[3:]:
            raise StfnError(f"batch['rgb'] {tuple(rgb.shape)} and batch['flow'] {tuple(flow.shape)} must have the "
                            "same B, T, H and W (the streams' feature maps are added)")
        return rgb, flow

    def _pool(self, maps: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """``(B*T, C, h, w) -> (B, T', C)``: temporal max-pool (stage 2; else ``T' = T``), spatial average."""
        x = maps.reshape(b, t, *maps.shape[1:])
        if self.temporal_pool:
            k = min(POOL_FRAMES, t)
            x = F.max_pool3d(x.transpose(1, 2), (k, 1, 1), (POOL_STRIDE, 1, 1)).transpose(1, 2)
        return x.mean(dim=(3, 4))

    def forward_features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"rgb_feat": (B, T', C), "flow_feat": (B, T', C)}`` from ``rgb (B, T, 3, H, W)`` and
        ``flow (B, T, 2L, H, W)``; the appearance features carry the motion connections. ``T' = T``, or
        ``(T - 5) // 2 + 1`` with ``temporal_pool`` (1 for ``T <= 5``)."""
        rgb, flow = self._inputs(batch)
        b, t = rgb.shape[:2]
        h = {"rgb": rgb.flatten(0, 1), "flow": flow.flatten(0, 1)}
        pre_rgb: torch.Tensor | None = None
        for i in range(self.backbones["rgb"].num_segments):
            # x_a + relu(x_m): appearance before its ReLU plus motion after it, into the residual branch
            branch = pre_rgb + h["flow"] if pre_rgb is not None and self.use_connections else None
            _, h["flow"] = self.backbones["flow"](h["flow"], t, i)
            pre_rgb, h["rgb"] = self.backbones["rgb"](h["rgb"], t, i, branch)
        return {f"{s}_feat": self._pool(h[s], b, t) for s in STREAMS}

    def forward_head(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, K)``: the mean of the two streams' average-consensus logits."""
        return self.head(features)

    def stream_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{stream: (B, K)}``: each stream's classifier, averaged over time."""
        return self.head.stream_logits(features)

