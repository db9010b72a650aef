"""Hugging Face Hub folders: a trained model as ``config.json`` + ``model.safetensors`` + ``README.md``.

The layout the Hub and ``huggingface_hub``'s ``ModelHubMixin`` use: the weights in safetensors (a
header and raw tensors: loading them can never run code), everything else stfn needs to rebuild and
run the model in ``config.json`` (``{"stfn": {...}}``: the run config, classes, how the training
videos were prepared, the data set's identity and training videos for the leak checks of ``stfn
eval``, the recorded metrics), and a model card (``README.md`` with the Hub's YAML metadata).

:func:`resolve_source` turns what a user typed into a file or folder: a ``.pt`` checkpoint, a Hub
folder, or a Hub repo id (``org/name``, fetched once through ``huggingface_hub.snapshot_download`` into
its cache; ``HF_HUB_OFFLINE=1`` uses the cache only). :func:`load_folder` reads a folder back as the
checkpoint dict :func:`stfn.engine.checkpoint.load_checkpoint` returns, so every command that takes a
checkpoint takes a folder or an id too. Needs the ``hub`` extra (``huggingface_hub``, ``safetensors``).
Imports no torch itself, so a command can check a source before it loads anything.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stfn.errors import StfnError
from stfn.fileio import atomic_write_json, atomic_write_text

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "HubError", "is_repo_id", "load_folder", "resolve_source", "save_folder"]

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
HUB_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# what a checkpoint dict holds besides the weights that a shared model keeps (no optimiser, RNG, ...)
KEPT = ("config", "classes", "epoch", "metrics", "best", "best_epoch", "dataset", "train_videos", "prepare",
        "inherited", "history", "source", "command", "inputs", "stfn_version")
if TYPE_CHECKING:
    import torch

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FILE_SUFFIXES = (*PICKLE_SUFFIXES, ".safetensors", ".json", ".yaml", ".yml", ".onnx")  # a path, not a repo id


class HubError(StfnError):
    """A Hub folder or repo id that cannot be used; the message names it."""


def is_repo_id(text: str | os.PathLike) -> bool:
    """``org/name`` and nothing on disk by that name: what :func:`resolve_source` fetches from the Hub."""
    return (isinstance(text, str) and bool(_REPO_ID.match(text)) and not text.lower().endswith(FILE_SUFFIXES)
            and not Path(text).exists())


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise HubError('Hub folders need the hub extra (safetensors is missing): pip install "stfn[hub]"') from None
    return safetensors.torch


def resolve_source(source: str | os.PathLike) -> Path:
    """The local file or folder of a checkpoint ``source``: itself when it exists, else a Hub repo id's
    snapshot (downloaded once, cached; only :data:`HUB_FILES`). One sentence when neither."""
    path = Path(source)
    if path.exists() or not is_repo_id(str(source)):
        return path
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise HubError(f"'{source}' is not a local file; reading it from the Hugging Face Hub needs the hub extra: "
                       'pip install "stfn[hub]"') from None
    try:
        return Path(snapshot_download(str(source), allow_patterns=list(HUB_FILES)))
    except RepositoryNotFoundError:
        raise HubError(f"'{source}' is neither a local file nor a Hugging Face Hub model (no such repo, or it "
                       "is private: log in with `hf auth login`)") from None
    except LocalEntryNotFoundError:
        raise HubError(f"'{source}' is not a local file and is not in the Hugging Face Hub cache, and the Hub "
                       "cannot be reached (offline, or HF_HUB_OFFLINE is set): download it once while online, "
                       "or give a local folder") from None
    except (HfHubHTTPError, OSError) as e:
        raise HubError(f"'{source}' could not be fetched from the Hugging Face Hub: {str(e).splitlines()[0]}") from None


def load_folder(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A Hub folder as a checkpoint dict (``model``: the state dict from safetensors; the rest from
    ``config.json``). A folder with pickled weights only is refused: they could run code."""
    weights, config = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise HubError(f"'{folder}' holds pickled weights ({pickles[0]}) and no {WEIGHTS_FILE}: stfn reads a "
                           "folder's weights from safetensors only, which cannot run code; export it with "
                           "`stfn export CKPT --format hub` from a source you trust")
        raise HubError(f"'{folder}' is not a model folder (no {WEIGHTS_FILE}; write one with "
                       "`stfn export CKPT --format hub --out DIR`)")
    try:
        meta = json.loads(config.read_text())
    except FileNotFoundError:
        raise HubError(f"'{folder}' has {WEIGHTS_FILE} but no {CONFIG_FILE}: it is not an stfn model folder") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise HubError(f"'{config}' is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("stfn"), dict) or "config" not in meta["stfn"]:
        raise HubError(f"'{config}' is not an stfn model config (no 'stfn' section with the run config): a model "
                       "of another library?")
    try:
        state = _safetensors().load_file(str(weights), device=str(map_location))
    except HubError:
        raise
    except Exception as e:  # safetensors raises its own error types for a damaged header or data
        raise HubError(f"'{weights}' is not a readable safetensors file ({str(e).splitlines()[0]}): an "
                       "interrupted download? fetch it again") from None
    ckpt = dict(meta["stfn"])
    ckpt["model"] = state
    ckpt.setdefault("source", {"format": "hub", "path": str(folder)})
    return ckpt


def save_folder(ckpt: dict[str, Any], out: str | os.PathLike, card: str) -> Path:
    """Write ``ckpt`` (a checkpoint dict) as a Hub folder at ``out``: each file atomically, the weights
    first, so a reader never meets a config without its weights. ``card``: the README.md text."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HubError(f"--out '{out}' is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in ckpt["model"].items()}
    tmp = out / f".{WEIGHTS_FILE}.{os.getpid()}.tmp"
    try:
        _safetensors().save_file(state, str(tmp), metadata={"format": "pt", "library": "stfn"})
        os.replace(tmp, out / WEIGHTS_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    kept = {k: ckpt[k] for k in KEPT if k in ckpt}
    atomic_write_json(out / CONFIG_FILE, {"library_name": "stfn", "stfn": kept})
    atomic_write_text(out / CARD_FILE, card)
    return out
