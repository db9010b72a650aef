"""Share a trained model the way the ecosystem does: a Hugging Face Hub folder with a model card.

:func:`save_pretrained` (``stfn export CKPT --format hub --out DIR``) writes ``model.safetensors``,
``config.json`` (everything ``predict`` needs: the run config, classes, input normalisation, sampling,
how the training videos were prepared) and ``README.md``, a model card made with ``huggingface_hub``'s
``ModelCard`` / ``ModelCardData`` (library name, tags, data set, the accuracy recorded by the run, the
command that trained it). Upload the folder with ``hf upload ORG/NAME DIR`` (or ``huggingface_hub``'s
``upload_folder``); every command that takes a checkpoint then takes ``ORG/NAME`` (:mod:`stfn.engine.hub`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from stfn.config import Config, config_to_dict
from stfn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from stfn.engine.checkpoint import checkpoint_config, load_checkpoint
from stfn.engine.hub import HubError, save_folder

__all__ = ["card_markdown", "input_spec", "model_card", "save_pretrained"]

TAGS = ["video-classification", "action-recognition", "two-stream", "optical-flow", "stfn", "pytorch"]

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

An stfn **{{ arch }}** network ({{ backbone }} backbone, streams: \
{{ streams }}) that classifies a whole video into one of {{ num_classes }} actions{{ trained_on }}.

## Use

```bash
pip install "stfn[hub]"
stfn predict {{ repo }} video.mp4 --top-k 5
stfn serve {{ repo }}
```

```python
import stfn
model = stfn.load_model("{{ repo }}")
model.predictor().predict("video.mp4")["top"]
```

## Inputs

{{ frames }} positions per video (TSN segment sampling: one per equal segment, the segment centres at test
time){{ flow_text }}; {{ crop_size }} px crops of frames resized to a {{ scale_size }} px short side; RGB in
0-255 minus the ImageNet mean over its std. `stfn predict` and `stfn serve` do all of it from the video file.

## Training

{{ training }}

## Evaluation

{{ evaluation }}

## Classes

{{ classes }}
"""


def model_card(cfg: Config, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint is, for people: architecture, inputs, classes, the data it was trained on, the
    accuracy recorded at training time (the last validation metrics; ``None`` when not recorded), where
    it came from (``source``: ``{"format": "stfn"}``, a Hub folder or repo, an MMAction2 conversion) and
    the command that trained it."""
    metrics = checkpoint.get("metrics") or {}
    dataset = checkpoint.get("dataset") or {}
    return {
        "arch": cfg.model.arch,
        "backbone": cfg.model.backbone,
        "streams": list(cfg.model.streams),
        "num_classes": cfg.model.num_classes,
        "classes": list(checkpoint.get("classes") or []),
        "frames": cfg.data.frames,
        "flow_length": cfg.model.flow_length,
        "crop_size": cfg.data.crop_size,
        "dataset": dataset.get("dataset", cfg.data.dataset),
        "split": dataset.get("split", cfg.data.split),
        "train_videos": len(checkpoint.get("train_videos") or []),
        "epoch": checkpoint.get("epoch"),
        "accuracy": {k: metrics[k] for k in ("top1", "top5", "mean_class_acc") if isinstance(metrics.get(k), int | float)}
        or None,
        "config_name": cfg.name,
        "stfn_version": checkpoint.get("stfn_version"),
        "source": dict(checkpoint.get("source") or {"format": "stfn"}),  # hub folder / repo, mmaction2, ...
        "command": checkpoint.get("command") or None,  # what trained it, when recorded
    }


def input_spec(cfg: Config, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What the network expects of its inputs, for ``config.json`` and the card."""
    prepare = ckpt.get("prepare") or {}
    spec: dict[str, Any] = {
        "frames": cfg.data.frames, "crop_size": cfg.data.crop_size, "scale_size": cfg.data.scale_size,
        "test_crops": cfg.data.test_crops, "sampling": "tsn_segments",
        "rgb": {"range": [0, 255], "mean": [m * 255 for m in IMAGENET_MEAN], "std": [s * 255 for s in IMAGENET_STD]},
    }
    if "flow" in cfg.model.streams:
        flow = prepare.get("flow") or {}
        spec["flow"] = {"fields": cfg.model.flow_length, "channels": 2 * cfg.model.flow_length, "order": "x1,y1,x2,y2,...",
                        "algorithm": flow.get("algorithm"), "bound": flow.get("bound"),
                        "normalised": "(q - 127.5) / 127.5 of the quantised flow q = v / bound * 127.5 + 127.5"}
    return spec


def _training_text(cfg: Config, ckpt: dict[str, Any]) -> str:
    command = ckpt.get("command") or "(not recorded)"
    source = ckpt.get("source") or {}
    lines = [f"Command: `{command}`." if not source.get("format") == "mmaction2"
             else f"Converted from the MMAction2 checkpoint `{Path(str(source.get('path', ''))).name}`.",
             f"{ckpt.get('epoch', 0)} epochs; {len(ckpt.get('train_videos') or [])} training videos. The run config:",
             "", "```yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False).rstrip(), "```"]
    return "\n".join(lines)


def _evaluation_text(card: dict[str, Any]) -> str:
    acc = card.get("accuracy")
    if not acc:
        return "No evaluation was recorded with this checkpoint; run `stfn eval` on your test split."
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.1f}%" for k, v in acc.items())
    return (f"Recorded at the end of training on the test set of {card['dataset']} split {card['split']}: {parts} "
            f"({card['frames']} positions, the training's test crops). Re-evaluate with `stfn eval`.")


def card_markdown(cfg: Config, ckpt: dict[str, Any], repo: str = "ORG/NAME") -> str:
    """The model card (``README.md``) of a checkpoint, with the Hub's YAML metadata."""
    try:
        from huggingface_hub import EvalResult, ModelCard, ModelCardData
    except ImportError:
        raise HubError('writing a Hub folder needs the hub extra (huggingface_hub is missing): pip install "stfn[hub]"') from None
    card = model_card(cfg, ckpt)
    acc = card.get("accuracy") or {}
    results = [EvalResult(task_type="video-classification", dataset_type=str(card["dataset"]),
                          dataset_name=str(card["dataset"]), dataset_split=f"split{card['split']}",
                          metric_type="accuracy", metric_name="top-1", metric_value=round(float(acc["top1"]), 2))
               ] if "top1" in acc else None
    data = ModelCardData(library_name="stfn", tags=TAGS, datasets=[str(card["dataset"])], metrics=["accuracy"],
                         pipeline_tag="video-classification", model_name=cfg.name, eval_results=results)
    classes = card["classes"]
    shown = ", ".join(f"`{c}`" for c in classes[:50]) + (f" and {len(classes) - 50} more" if len(classes) > 50 else "")
    flow = "; flow: " + f"{cfg.model.flow_length} stacked flow fields per position" if "flow" in card["streams"] else ""
    return str(ModelCard.from_template(
        data, template_str=TEMPLATE, model_name=cfg.name, arch=card["arch"], backbone=card["backbone"],
        streams=" + ".join(card["streams"]), num_classes=card["num_classes"], repo=repo,
        trained_on=f", trained on {card['dataset']} (split {card['split']})" if card["train_videos"] else "",
        frames=card["frames"], flow_text=flow, crop_size=card["crop_size"], scale_size=cfg.data.scale_size,
        training=_training_text(cfg, ckpt), evaluation=_evaluation_text(card), classes=shown))


def save_pretrained(source: str | os.PathLike, out_dir: str | os.PathLike, *, repo: str = "ORG/NAME") -> Path:
    """Write the checkpoint ``source`` (a ``.pt``, a Hub folder or repo id) as a Hub folder in ``out_dir``:
    ``model.safetensors`` (weights only), ``config.json``, ``README.md``. ``repo``: the id the card's
    examples use (where you will upload it). Optimiser, scheduler and RNG state are left out."""
    ckpt = load_checkpoint(source)
    cfg = checkpoint_config(ckpt, source)
    ckpt = dict(ckpt, inputs=input_spec(cfg, ckpt))
    return save_folder(ckpt, out_dir, card_markdown(cfg, ckpt, repo))
