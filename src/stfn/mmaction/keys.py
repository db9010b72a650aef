"""MMAction2 TSN key names -> stfn TSN key names (names only, no tensors), the ResNet depth they
describe and the layout (MMAction2's ConvModule ResNet or its ``torchvision.resnet*`` backbone)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from stfn.errors import StfnError

# (blocks per stage, bottleneck) -> depth: MMAction2's ResNet.arch_settings (torchvision's too)
_DEPTHS = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34, ((3, 4, 6, 3), True): 50,
           ((3, 4, 23, 3), True): 101, ((3, 8, 36, 3), True): 152}
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_BLOCK = r"(layer[1-4]\.\d+)"
# MMAction2 ResNet (ConvModule) name -> torchvision name, after "backbone."
_MMACTION_RULES = [
    (re.compile(r"conv1\.conv\.weight"), r"conv1.weight"),
    (re.compile(rf"conv1\.bn\.{_BN}"), r"bn1.\1"),
    (re.compile(rf"{_BLOCK}\.conv([1-3])\.conv\.weight"), r"\1.conv\2.weight"),
    (re.compile(rf"{_BLOCK}\.conv([1-3])\.bn\.{_BN}"), r"\1.bn\2.\3"),
    (re.compile(rf"{_BLOCK}\.downsample\.conv\.weight"), r"\1.downsample.0.weight"),
    (re.compile(rf"{_BLOCK}\.downsample\.bn\.{_BN}"), r"\1.downsample.1.\2"),
]
# MMAction2's torchvision.resnet* backbone: torchvision's names already (its fc is an Identity)
_TORCHVISION_RULES = [
    (re.compile(r"conv1\.weight"), r"conv1.weight"),
    (re.compile(rf"bn1\.{_BN}"), r"bn1.\1"),
    (re.compile(rf"{_BLOCK}\.conv([1-3])\.weight"), r"\1.conv\2.weight"),
    (re.compile(rf"{_BLOCK}\.bn([1-3])\.{_BN}"), r"\1.bn\2.\3"),
    (re.compile(rf"{_BLOCK}\.downsample\.0\.weight"), r"\1.downsample.0.weight"),
    (re.compile(rf"{_BLOCK}\.downsample\.1\.{_BN}"), r"\1.downsample.1.\2"),
]
_HEAD = {"cls_head.fc_cls.weight": "weight", "cls_head.fc_cls.bias": "bias"}
PREPROCESSOR_KEYS = ("data_preprocessor.mean", "data_preprocessor.std")  # read as the input normalisation
STEM_KEYS = {"mmaction": "backbone.conv1.conv.weight", "torchvision": "backbone.conv1.weight"}


class MMActionError(StfnError):
    """An MMAction2 checkpoint that cannot become an stfn TSN; the message names the file or key."""


# ----------------------------------------------------------------------------- the key map (names only)


def backbone_layout(keys: Iterable[str], what: str = "the MMAction2 state dict") -> str:
    """``"mmaction"`` (MMAction2's ResNet, ConvModule names) or ``"torchvision"`` (its
    ``torchvision.resnet*`` backbone); BN-Inception and anything else are refused naming a key."""
    keys = set(keys)
    if STEM_KEYS["mmaction"] in keys:
        return "mmaction"
    if STEM_KEYS["torchvision"] in keys and "backbone.bn1.weight" in keys:
        return "torchvision"
    if "backbone.conv1_7x7_s2.weight" in keys:
        raise MMActionError(f"{what} holds a BN-Inception backbone ('backbone.conv1_7x7_s2.weight'); stfn has no "
                            "BN-Inception network to load it into: only TSN with a ResNet backbone (18 to 152) converts")
    found = sorted(k for k in keys if k.startswith("backbone."))
    seen = f"its first backbone key is '{found[0]}'" if found else "it has no 'backbone.' keys"
    raise MMActionError(f"{what} is not a TSN with MMAction2's ResNet backbone: it has no "
                        f"'{STEM_KEYS['mmaction']}' ({seen})")


def _hint(key: str) -> str:
    if ".net." in key or "shift" in key:
        return " (a TSM / TIN backbone wraps its convolutions; only TSN's plain ResNet converts)"
    if key.startswith("cls_head."):
        return " (MMAction2's TSNHead has only fc_cls; another head does not convert)"
    if key.startswith("backbone."):
        return " (a backbone other than MMAction2's plain ResNet?)"
    return ""


def mmaction_key_map(keys: Iterable[str], stream: str, what: str = "the MMAction2 state dict") -> dict[str, str]:
    """MMAction2 TSN key -> stfn TSN key, for every key of a state dict (names only, no tensors):
    ``backbone.layer1.0.conv2.bn.running_var -> backbones.<stream>.net.layer1.0.bn2.running_var``,
    ``cls_head.fc_cls.weight -> head.fcs.<stream>.weight``. ``data_preprocessor.mean`` / ``.std`` map
    to nothing (they are the input normalisation). A key no rule maps, or no ``cls_head.fc_cls``, is an
    :class:`MMActionError` naming it."""
    keys = list(keys)
    rules = _MMACTION_RULES if backbone_layout(keys, what) == "mmaction" else _TORCHVISION_RULES
    out: dict[str, str] = {}
    for key in keys:
        if key in PREPROCESSOR_KEYS:
            continue
        target = None
        if key in _HEAD:
            target = f"head.fcs.{stream}.{_HEAD[key]}"
        elif key.startswith("backbone."):
            name = key[len("backbone."):]
            target = next((rx.sub(repl, name) for rx, repl in rules if rx.fullmatch(name)), None)
            target = target and f"backbones.{stream}.net.{target}"
        if target is None:
            raise MMActionError(f"{what} holds '{key}', which no weight of a TSN ResNet matches{_hint(key)}")
        out[key] = target
    for key in _HEAD:
        if key not in out:
            raise MMActionError(f"{what} has no '{key}': not a TSN recognizer with MMAction2's TSNHead")
    return out


def mmaction_name(key: str, layout: str = "mmaction") -> str:
    """The MMAction2 key of an stfn TSN key (the inverse of :func:`mmaction_key_map`), to name what is
    missing: ``backbones.rgb.net.layer1.0.bn2.weight -> backbone.layer1.0.conv2.bn.weight``."""
    m = re.fullmatch(r"head\.fcs\.\w+\.(weight|bias)", key)
    if m:
        return f"cls_head.fc_cls.{m[1]}"
    name = re.sub(r"^backbones\.\w+\.net\.", "", key)
    if layout == "mmaction":
        for rx, repl in ((r"conv1\.weight", r"conv1.conv.weight"), (rf"bn1\.{_BN}", r"conv1.bn.\1"),
                         (rf"{_BLOCK}\.conv([1-3])\.weight", r"\1.conv\2.conv.weight"),
                         (rf"{_BLOCK}\.bn([1-3])\.{_BN}", r"\1.conv\2.bn.\3"),
                         (rf"{_BLOCK}\.downsample\.0\.weight", r"\1.downsample.conv.weight"),
                         (rf"{_BLOCK}\.downsample\.1\.{_BN}", r"\1.downsample.bn.\2")):
            if re.fullmatch(rx, name):
                name = re.sub(rx, repl, name)
                break
    return f"backbone.{name}"


def resnet_depth(keys: Iterable[str], what: str = "the MMAction2 state dict") -> int:
    """18, 34, 50, 101 or 152: the ResNet whose blocks per stage (and Bottleneck or BasicBlock) the
    ``backbone.layer{i}.{j}.*`` keys describe."""
    blocks = {i: 0 for i in range(1, 5)}
    bottleneck = False
    for key in keys:
        m = re.match(r"backbone\.layer([1-4])\.(\d+)\.", key)
        if m:
            blocks[int(m[1])] = max(blocks[int(m[1])], int(m[2]) + 1)
            bottleneck = bottleneck or ".conv3." in key
    stages = tuple(blocks[i] for i in range(1, 5))
    depth = _DEPTHS.get((stages, bottleneck))
    if depth is None:
        kind = "Bottleneck" if bottleneck else "BasicBlock"
        raise MMActionError(f"{what} holds a ResNet with {stages} {kind} blocks per stage, not ResNet-18, 34, 50, 101 "
                            "or 152 (the depths MMAction2's ResNet and stfn share)")
    return depth

