"""``convert_checkpoint``: an MMAction2 TSN checkpoint as the stfn checkpoint ``stfn import-mmaction``
writes, and the one line it prints."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stfn.config import Config, ModelConfig, apply_overrides, config_from_dict
from stfn.data.video.flow import DEFAULT_BOUND, flow_settings
from stfn.engine.checkpoint import load_state, make_checkpoint, save_checkpoint, to_plain_types
from stfn.errors import ParameterError
from stfn.mmaction.files import (
    TSN_TEST,
    check_config,
    config_text,
    plain_meta,
    read_classes,
    read_mmaction_checkpoint,
    sha256_of,
    tsn_test_settings,
)
from stfn.mmaction.keys import MMActionError, backbone_layout, resnet_depth
from stfn.mmaction.weights import check_fits, convert_state_dict, stem_weight
from stfn.models import build_model

TSN_DROPOUT = 0.4  # TSNHead dropout_ratio of configs/_base_/models/tsn_r50.py


def _stream(in_channels: int, modality: str | None, flow_length: int | None, what: str) -> tuple[str, int]:
    """``(stream, L)`` from the first convolution's input channels, checked against what was asked."""
    if in_channels == 3:
        inferred, length = "rgb", None
    elif in_channels % 2 == 0:
        inferred, length = "flow", in_channels // 2
    else:
        raise MMActionError(f"{what}: the first convolution takes {in_channels} channels, neither RGB (3) nor a "
                            "flow stack (2 per field)")
    if modality is not None and modality not in ("rgb", "flow"):
        raise ParameterError("modality", f"must be rgb or flow, got '{modality}'")
    if modality is not None and modality != inferred:
        kind = "an RGB model" if inferred == "rgb" else f"a flow model of {length} fields"
        raise ParameterError("modality", f"is {modality} but {what} is {kind} (its first convolution takes "
                                         f"{in_channels} channels)")
    if flow_length is not None:
        if inferred != "flow":
            raise ParameterError("flow_length", f"is given ({flow_length}) but {what} is an RGB model")
        if flow_length != length:
            raise ParameterError("flow_length", f"is {flow_length} but {what} stacks {length} flow fields (its first "
                                                f"convolution takes {in_channels} channels)")
    return inferred, length or ModelConfig().flow_length


def _config(name: str, stream: str, depth: int, num_classes: int, flow_length: int, dropout: float,
            data: dict[str, int], overrides: Sequence[str]) -> Config:
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if not (key == "name" or key.startswith(("data.", "train."))):
            raise ParameterError("overrides", f"may set data.*, train.* and name, not '{key}': the model section "
                                              "comes from the MMAction2 checkpoint")
    base = {"name": name,
            "model": {"arch": "tsn", "streams": [stream], "backbone": f"resnet{depth}", "num_classes": num_classes,
                      "flow_length": flow_length, "pretrained": False, "tsn_dropout": dropout},
            "data": {"dataset": "list", **data}}
    return config_from_dict(apply_overrides(base, list(overrides)))


def convert_checkpoint(
    path: str | os.PathLike,
    modality: str | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    *,
    flow_length: int | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """The stfn checkpoint (:func:`~stfn.engine.checkpoint.make_checkpoint`'s dict) of the MMAction2 TSN
    checkpoint at ``path``, written to ``out`` (a ``.pt`` file, atomically) when given.

    ``modality`` (``rgb`` / ``flow``) and ``flow_length`` default to what the first convolution's input
    channels say (3, or 2 per flow field) and are checked against it. ``classes``: a file (one name per
    line, or ``classInd.txt``'s ``<index> <name>``) or a list, one name per output; default the names
    the checkpoint's ``meta["dataset_meta"]`` holds, else ``class_0 .. class_{K-1}``. ``overrides``:
    ``data.*`` / ``train.*`` keys of the stored config (``data.dataset=ucf101``, ``data.test_crops=1``).
    The network is built with :func:`~stfn.models.build_model` and loaded strictly, so every tensor has
    its place and shape.
    """
    path = Path(path)
    what = f"MMAction2 checkpoint '{path}'"
    if out is not None:
        out = Path(out)
        if out.suffix != ".pt":
            raise ParameterError("out", f"must be a .pt file, got '{out}'")
        if out.is_dir():
            raise ParameterError("out", f"is a folder ('{out}'), not a .pt file")
        if out.exists() and path.exists() and out.resolve() == path.resolve():
            raise ParameterError("out", f"is the MMAction2 checkpoint itself ('{out}'); write the stfn one elsewhere")
    state, meta = read_mmaction_checkpoint(path)
    text = config_text(meta)
    check_config(text, what)
    layout = backbone_layout(state, what)
    stream, length = _stream(int(stem_weight(state, what).shape[1]), modality, flow_length, what)
    depth = resnet_depth(state, what)
    converted, norm = convert_state_dict(state, stream, what)
    num_classes = int(state["cls_head.fc_cls.weight"].shape[0])
    names = _class_names(classes, meta, num_classes, what)
    data, protocol = tsn_test_settings(meta)
    m = re.search(r"dropout_ratio\s*=\s*(\d+(?:\.\d*)?|\.\d+)", text)
    dropout = float(m[1]) if m and float(m[1]) < 1 else TSN_DROPOUT
    cfg = _config(path.stem, stream, depth, num_classes, length, dropout, data, overrides)
    model = build_model(cfg.model)
    check_fits(model, converted, layout, f"a ResNet-{depth} TSN", what)
    load_state(model, converted, f"{what} (converted to a ResNet-{depth} TSN)")
    prepare = {"flow": flow_settings("tvl1", {}, DEFAULT_BOUND)} if stream == "flow" else {}
    epoch = meta.get("epoch") if isinstance(meta.get("epoch"), int) else 0
    ckpt = make_checkpoint(model.eval(), cfg, names, epoch, prepare=prepare)
    ckpt["command"] = ""
    ckpt["source"] = to_plain_types({
        "format": "mmaction2", "path": str(path.resolve()), "sha256": sha256_of(path),
        "layout": f"{'MMAction2 ResNet' if layout == 'mmaction' else 'torchvision ResNet'}-{depth}, {stream}"
                  + (f", {length} flow fields" if stream == "flow" else ""),
        "test_protocol": {**data, "from": protocol}, "normalisation": norm, "mmaction_meta": plain_meta(meta),
    })
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(ckpt, out)
    return ckpt



def _class_names(classes: str | os.PathLike | Sequence[str] | None, meta: Mapping[str, Any], num_classes: int,
                 what: str) -> list[str]:
    if isinstance(classes, (str, os.PathLike)):
        return read_classes(classes, num_classes, what)
    if classes is not None:
        names = [str(c) for c in classes]
        if len(names) != num_classes:
            raise ParameterError("classes", f"lists {len(names)} names but {what} has {num_classes} outputs")
        return names
    recorded = (meta.get("dataset_meta") or {}).get("classes") if isinstance(meta.get("dataset_meta"), dict) else None
    if isinstance(recorded, (list, tuple)) and len(recorded) == num_classes:
        return [str(c) for c in recorded]
    return [f"class_{i}" for i in range(num_classes)]


def checkpoint_summary(ckpt: Mapping[str, Any]) -> str:
    """One line on a converted checkpoint, for ``stfn import-mmaction``."""
    cfg = config_from_dict(ckpt["config"])
    src = ckpt["source"]
    norm = src["normalisation"]
    d, mm = cfg.data, src["test_protocol"]
    what = (f"{src['layout']}, {cfg.model.num_classes} classes; test protocol {d.frames} positions x {d.test_crops} "
            f"crops of {d.crop_size} from a short side of {d.scale_size}")
    if all(getattr(d, k) == mm[k] for k in TSN_TEST):
        what += f" ({mm['from']})"
    else:
        what += (f" (--set; {mm['from']}: {mm['frames']} x {mm['test_crops']} crops of {mm['crop_size']} from "
                 f"{mm['scale_size']})")
    if norm["scale_folded_into_first_conv"]:
        what += (f"; MMAction2's input scale folded into the first convolution, a shift of "
                 f"{norm['unfolded_input_shift']:.4f} left (MMAction2 normalises around {norm['mmaction2']['mean'][0]:g})")
    return what

