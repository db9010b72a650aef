"""Per-frame 2D CNN backbones and the flow stem.

A backbone maps one image (or one stack of ``L`` flow fields) to a feature vector:
``(N, C_in, H, W) -> (N, feature_dim)``. The two-stream networks apply it to every frame by
flattening ``(B, T, ...)`` to ``(B*T, ...)``.

Sources, chosen by ``model.backbone``:

- any torchvision image classifier by name (``resnet18``, ``resnet50``, ``mobilenet_v3_small``,
  ``efficientnet_b0``, ``convnext_tiny``, ``regnet_y_400mf``, ...): built with
  ``torchvision.models.get_model``; its last ``nn.Linear`` (the classifier) becomes ``nn.Identity``;
- ``timm:<name>`` when timm is installed: ``timm.create_model(name, num_classes=0)``;
- ``cnn_small``: our own 5-stage conv-BN-ReLU network (~0.76 M parameters, 256-d features) for
  64x64 inputs: the synthetic demo and the tests. It has no pretrained weights.

The motion stream takes ``2L`` channels. :func:`adapt_stem` swaps the first convolution with
``in_channels == 3`` for one with ``2L`` input channels whose kernels are the RGB kernels averaged over
the input channels and replicated ``2L`` times (TSN cross-modality initialisation).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from stfn.config import ConfigError
from stfn.errors import StfnError

__all__ = [
    "BUILTIN_BACKBONES",
    "FrameBackbone",
    "SmallCNN",
    "adapt_stem",
    "build_backbone",
    "build_rgb_network",
    "find_stem",
]


class SmallCNN(nn.Module):
    """Our small per-frame CNN (``cnn_small``): 5 stages of 3x3 conv-BN-ReLU, global average pool.

    ``(N, in_channels, H, W) -> (N, 256)``. Strides 2, 2, 2, 2, 1: a 64x64 input ends at 4x4.
    """

    widths = (32, 64, 128, 192, 256)

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(self.widths):
            stride = 1 if i == len(self.widths) - 1 else 2
            layers += [nn.Conv2d(c, w, 3, stride, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


BUILTIN_BACKBONES: dict[str, type[nn.Module]] = {"cnn_small": SmallCNN}


class FrameBackbone(nn.Module):
    """A 2D network applied to single frames: ``(N, in_channels, H, W) -> (N, feature_dim)``.

    ``stem_name`` is the qualified name (inside ``net``) of the first convolution, the one that
    :func:`adapt_stem` replaces for the flow stream.
    """

    def __init__(self, net: nn.Module, name: str, feature_dim: int, in_channels: int, stem_name: str) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.feature_dim = feature_dim
        self.in_channels = in_channels
        self.stem_name = stem_name

    @property
    def stem(self) -> nn.Conv2d:
        return self.net.get_submodule(self.stem_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, in_channels={self.in_channels}, feature_dim={self.feature_dim}"


def find_stem(net: nn.Module, hint: str | None = None) -> str:
    """Qualified name of the first ``nn.Conv2d`` with ``in_channels == 3`` (registration order).

    ``hint`` (e.g. timm's ``pretrained_cfg["first_conv"]``) is used when it names such a layer.
    """
    if isinstance(hint, str) and hint:
        try:
            m = net.get_submodule(hint)
        except AttributeError:
            m = None
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            return hint
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            return name
    raise StfnError(f"backbone {type(net).__name__} has no 2D convolution over 3 input channels to adapt")


def _set_submodule(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, attr, module)


def adapt_stem(backbone: FrameBackbone, in_channels: int, cross_modality_init: bool = True) -> FrameBackbone:
    """Give ``backbone`` (built for RGB) a first convolution over ``in_channels`` channels, in place.

    With ``cross_modality_init`` the new kernels are the RGB kernels averaged over the input channels
    and replicated ``in_channels`` times (TSN); otherwise they are drawn afresh (Kaiming, fan-out).
    The layer's class and all other settings (stride, padding, bias, 'same' padding, ...) are kept.
    """
    old = backbone.stem
    if old.groups != 1:
        raise StfnError(f"backbone {backbone.name}: the first convolution is grouped; cannot adapt it to flow")
    new = copy.deepcopy(old)
    with torch.no_grad():
        if cross_modality_init:
            w = old.weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
        else:
            w = torch.empty(old.out_channels, in_channels, *old.kernel_size, device=old.weight.device)
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    new.weight = nn.Parameter(w.to(old.weight.dtype))
    new.in_channels = in_channels
    _set_submodule(backbone.net, backbone.stem_name, new)
    if getattr(backbone.net, "transform_input", False):
        backbone.net.transform_input = False  # googlenet / inception_v3 remap exactly 3 RGB channels
    backbone.in_channels = in_channels
    return backbone


def _offline_error(name: str, err: Exception) -> StfnError:
    return StfnError(
        f"the pretrained weights of backbone '{name}' could not be downloaded ({type(err).__name__}: {err}); "
        "run once on a connected machine, or place the weights in the torch hub / Hugging Face cache, "
        "or set model.pretrained=false"
    )


def _torchvision_net(name: str, pretrained: bool) -> tuple[nn.Module, int, str | None]:
    from torchvision import models  # imported here: ~1 s, needed only for torchvision backbones

    if name not in models.list_models(module=models):
        raise ConfigError(
            f"model.backbone '{name}' is not a torchvision image classifier, 'timm:<name>' or one of "
            f"{sorted(BUILTIN_BACKBONES)} (e.g. resnet18, resnet50, mobilenet_v3_small, efficientnet_b0)"
        )
    weights = models.get_model_weights(name).DEFAULT if pretrained else None
    kwargs = {"init_weights": True} if name in ("googlenet", "inception_v3") and weights is None else {}
    try:
        net = models.get_model(name, weights=weights, **kwargs)
    except OSError as e:  # URLError, ConnectionError, ... when offline
        raise _offline_error(name, e) from None
    # Auxiliary classifiers (googlenet, inception_v3) only matter for ImageNet training.
    for aux in ("aux1", "aux2", "AuxLogits"):
        if getattr(net, aux, None) is not None:
            setattr(net, aux, None)
    if hasattr(net, "aux_logits"):
        net.aux_logits = False
    last = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ConfigError(f"model.backbone '{name}' has no linear classifier to remove; pick another network")
    fc_name, fc = last[-1]
    _set_submodule(net, fc_name, nn.Identity())
    return net, fc.in_features, None


def _timm_net(name: str, pretrained: bool) -> tuple[nn.Module, int, str | None]:
    try:
        import timm  # optional dependency (the timm extra), imported only for timm backbones
    except ImportError:
        raise ConfigError(
            f"model.backbone 'timm:{name}' needs timm; install it with pip install 'stfn[timm]'"
        ) from None
    if not timm.is_model(name):
        raise ConfigError(f"model.backbone 'timm:{name}' is not a timm model name (see timm.list_models())")
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except OSError as e:  # huggingface_hub / urllib errors when offline are OSErrors
        raise _offline_error(f"timm:{name}", e) from None
    dim = getattr(net, "head_hidden_size", None) or net.num_features
    hint = getattr(net, "pretrained_cfg", {}).get("first_conv")
    return net, int(dim), hint


def build_rgb_network(name: str, pretrained: bool = False) -> FrameBackbone:
    """The backbone ``name`` for 3-channel frames, with its classifier removed."""
    if name in BUILTIN_BACKBONES:
        if pretrained:
            raise ConfigError(f"model.backbone '{name}' has no pretrained weights; set model.pretrained=false")
        net = BUILTIN_BACKBONES[name]()
        dim, hint = net.num_features, None
    elif name.startswith("timm:"):
        net, dim, hint = _timm_net(name[len("timm:") :], pretrained)
    else:
        net, dim, hint = _torchvision_net(name, pretrained)
    return FrameBackbone(net, name, dim, 3, find_stem(net, hint))


def build_backbone(
    name: str, in_channels: int = 3, pretrained: bool = False, cross_modality_init: bool = True
) -> FrameBackbone:
    """A per-frame backbone for ``in_channels`` inputs (3 for RGB, ``2L`` for a flow stack)."""
    backbone = build_rgb_network(name, pretrained)
    if in_channels != 3:
        adapt_stem(backbone, in_channels, cross_modality_init)
    return backbone
