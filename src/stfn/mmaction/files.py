"""An MMAction2 checkpoint file: its tensors and meta read with ``weights_only=True``, the config it
recorded (test protocol, style, channel order) and a class-names file."""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stfn.data.split_files import parse_class_ind, parse_class_names
from stfn.engine.checkpoint import what_is_wrong
from stfn.errors import ParameterError
from stfn.mmaction.keys import MMActionError

#: MMAction2's TSN test protocol (``test_pipeline``: SampleFrames num_clips=25, Resize scale=(-1, 256),
#: TenCrop crop_size=224) in stfn's data keys; used where the checkpoint's own config does not say.
TSN_TEST = {"frames": 25, "test_crops": 10, "scale_size": 256, "crop_size": 224}


def read_mmaction_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of an MMAction2 checkpoint, read with ``torch.load(weights_only=True)`` on
    the CPU (``module.`` prefixes removed); a file that holds more than tensors and plain values, or
    is no checkpoint at all, is refused in one sentence naming it."""
    path = Path(path)
    if not path.is_file():
        raise MMActionError(f"MMAction2 checkpoint '{path}' does not exist" if not path.is_dir()
                            else f"'{path}' is a folder, not an MMAction2 checkpoint file (.pth)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise MMActionError(f"MMAction2 checkpoint '{path}' cannot be read: {e.strerror or e}") from None
    except Exception as e:  # unpickling errors come in many types: say what the file holds instead
        raise MMActionError(_refusal(path, str(e))) from None
    if not isinstance(ckpt, dict):
        raise MMActionError(f"'{path}' holds a {type(ckpt).__name__}, not an MMAction2 checkpoint (a dict with "
                            "'state_dict')")
    if all(k in ckpt for k in ("model", "config", "classes")):
        raise MMActionError(f"'{path}' is an stfn checkpoint already, not an MMAction2 one")
    state = ckpt.get("state_dict", ckpt if any(str(k).startswith(("backbone.", "module.")) for k in ckpt) else None)
    if not isinstance(state, Mapping) or not state:
        raise MMActionError(f"'{path}' is not an MMAction2 checkpoint: it has no 'state_dict' (its keys: "
                            f"{', '.join(map(str, list(ckpt)[:6]))})")
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise MMActionError(f"'{path}': state_dict entry '{bad}' is a {type(state[bad]).__name__}, not a tensor")
    keys = [str(k) for k in state]
    if all(k.startswith("module.") for k in keys):
        state = {k[len("module."):]: v for k, v in zip(keys, state.values(), strict=True)}
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    return dict(state), meta


def _refusal(path: Path, error: str) -> str:
    """One sentence on a file ``torch.load(weights_only=True)`` refused (never advice to load it anyway)."""
    blocked = re.findall(r"GLOBAL ([\w.]+)", error)
    if not blocked:
        return what_is_wrong(path, error)  # empty, truncated, text, not a pickle, ...
    name = "".join(c if c.isprintable() else repr(c)[1:-1] for c in blocked[0][:80])  # the file's own text
    if name.split(".")[0] in ("mmengine", "mmcv", "mmaction", "numpy"):
        return (f"MMAction2 checkpoint '{path}' holds {name} objects besides its weights (a training checkpoint's "
                "message_hub or meta?); stfn loads only tensors and plain values and refuses it: use the released "
                "checkpoint, or one written by MMAction2's tools/deployment/publish_model.py")
    return (f"'{path}' contains code that loading it would run (it refers to {name}); stfn loads only tensors "
            "and plain values and refuses it: use a checkpoint from a source you trust")


_DROP = object()


def plain_meta(obj: Any) -> Any:
    """The plain parts of ``obj`` (MMAction2's ``meta``): dicts, lists, strings, numbers; tensors and
    anything else left out."""
    if isinstance(obj, Mapping):
        kept = {str(k): plain_meta(v) for k, v in obj.items()}
        return {k: v for k, v in kept.items() if v is not _DROP}
    if isinstance(obj, (list, tuple)):
        return [p for p in (plain_meta(v) for v in obj) if p is not _DROP]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    return _DROP


def config_text(meta: Mapping[str, Any]) -> str:
    """The MMAction2 config the checkpoint recorded (mmengine ``meta["cfg"]``, mmcv ``meta["config"]``), or ``""``."""
    for key in ("cfg", "config"):
        if isinstance(meta.get(key), str):
            return meta[key]
    return ""


def _block(text: str, name: str) -> str:
    """``name = [ ... ]`` of a Python config text, brackets balanced, or ``""``."""
    m = re.search(rf"(?m)^{name}\s*=\s*\[", text)
    if not m:
        return ""
    depth, i = 0, m.end() - 1
    for j in range(i, len(text)):
        depth += {"[": 1, "]": -1}.get(text[j], 0)
        if depth == 0:
            return text[i : j + 1]
    return ""


def tsn_test_settings(meta: Mapping[str, Any]) -> tuple[dict[str, int], str]:
    """stfn's data settings for MMAction2's test protocol: the ``test_pipeline`` of the checkpoint's
    config where it says (``num_clips``, ``TenCrop`` / ``ThreeCrop`` / ``CenterCrop``, ``crop_size``,
    ``Resize scale=(-1, S)``), else :data:`TSN_TEST`; and where they came from."""
    pipe = _block(config_text(meta), "test_pipeline")
    if not pipe:
        return dict(TSN_TEST), "MMAction2's TSN test pipeline"
    found: dict[str, int] = {}
    if m := re.search(r"num_clips\s*=\s*(\d+)", pipe):
        found["frames"] = int(m[1])
    crops = {"TenCrop": 10, "ThreeCrop": 3, "CenterCrop": 1}
    if m := re.search(r"type\s*=\s*'(TenCrop|ThreeCrop|CenterCrop)'", pipe):
        found["test_crops"] = crops[m[1]]
    if m := re.search(r"crop_size\s*=\s*(\d+)", pipe):
        found["crop_size"] = int(m[1])
    if m := re.search(r"scale\s*=\s*\(\s*-1\s*,\s*(\d+)\s*\)", pipe):
        found["scale_size"] = int(m[1])
    return {**TSN_TEST, **found}, "the checkpoint's test_pipeline" if found else "MMAction2's TSN test pipeline"


def check_config(text: str, what: str) -> None:
    """Refuse what the weights cannot show but would change what they compute: a caffe-style ResNet
    (stride on the first 1x1 convolution) or BGR input."""
    if re.search(r"style\s*=\s*['\"]caffe['\"]", text):
        raise MMActionError(f"{what} is a caffe-style ResNet (style='caffe' in its config: the stride on the 1x1 "
                            "convolution); stfn's torchvision ResNet strides the 3x3 one and would compute another network")
    if re.search(r"to_(rgb|bgr)\s*=\s*True", text):
        raise MMActionError(f"{what} was trained on BGR frames (to_rgb / to_bgr=True in its config); stfn feeds RGB "
                            "and does not reorder the first convolution's channels")


def read_classes(path: str | os.PathLike, num_classes: int, what: str) -> list[str]:
    """Class names from a file: one per line, or ``<index> <name>`` lines (UCF101's ``classInd.txt``,
    indices from 1; or from 0); exactly ``num_classes`` of them."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError("classes", f"file '{path}' does not exist")
    lines = [line.split() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    numbered = bool(lines) and all(len(p) == 2 and p[0].isdigit() for p in lines)
    if numbered and min(int(p[0]) for p in lines) == 0:
        names = [p[1] for p in sorted(lines, key=lambda p: int(p[0]))]
        if sorted(int(p[0]) for p in lines) != list(range(len(lines))):
            raise ParameterError("classes", f"file '{path}' must number its classes 0..{len(lines) - 1} without gaps")
    else:
        names = parse_class_ind(path) if numbered else parse_class_names(path)
    if len(names) != num_classes:
        raise ParameterError("classes", f"file '{path}' lists {len(names)} classes but {what} has {num_classes} "
                                        f"outputs (cls_head.fc_cls)")
    return names


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

