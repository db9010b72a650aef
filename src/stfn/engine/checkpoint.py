"""Self-describing checkpoints: save atomically, load with ``weights_only=True``, rebuild the model.

A checkpoint is a plain dict (see docs/interfaces.md, "Checkpoints"): ``model`` (state dict),
``config`` (resolved config as a dict), ``classes``, ``epoch`` (epochs completed), ``optimizer``,
``scheduler``, ``scaler``, ``rng``, ``dataset`` (the training set's identity), ``train_videos``,
``metrics`` (last validation, without per-video predictions), ``history`` (per-epoch metrics) and
``stfn_version``. Everything in it is a tensor or a plain Python type, so ``torch.load(...,
weights_only=True)`` reads it without running any pickled code.
"""

from __future__ import annotations

import os
import pickletools
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stfn.config import Config, ConfigError, config_from_dict, config_to_dict
from stfn.data.features import load_features_meta
from stfn.engine import hub
from stfn.errors import StfnError
from stfn.fileio import atomic_torch_save
from stfn.models import build_model
from stfn.version import __version__

__all__ = ["CheckpointError", "what_is_wrong", "check_resume_identity", "get_rng_state", "identity_difference",
           "inheritance", "inherited_videos", "load_backbone", "load_checkpoint", "load_model", "load_state",
           "make_checkpoint", "save_checkpoint", "seen_videos", "set_rng_state", "to_plain_types"]

REQUIRED_KEYS = ("model", "config", "classes")


class CheckpointError(StfnError):
    """A checkpoint file is missing, unreadable, or does not fit the model it should load into."""


def to_plain_types(obj: Any) -> Any:
    """``obj`` (nested dicts, lists, tuples) rebuilt from plain Python types, as a checkpoint and JSON
    hold them: keys as strings, tuples as lists, numpy arrays and scalars as lists and numbers, paths
    as strings; anything else as it is."""
    if isinstance(obj, dict):
        return {str(k): to_plain_types(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain_types(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def get_rng_state() -> dict[str, Any]:
    """Torch CPU/CUDA, Python and NumPy generator states as tensors and plain types."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only where the GPUs match)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )


def make_checkpoint(
    model: nn.Module,
    cfg: Config,
    classes: list[str],
    epoch: int,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    dataset: dict | None = None,
    train_videos: list[str] | None = None,
    metrics: dict | None = None,
    history: list[dict] | None = None,
    prepare: dict | None = None,
    inherited: dict | None = None,
    best: dict | None = None,
    best_epoch: int = 0,
    command: str = "",
    processes: dict | None = None,
) -> dict[str, Any]:
    """The checkpoint dict; ``model`` must be the bare module (not DDP-wrapped or compiled).

    ``prepare`` records how the training videos were prepared (``{"flow", "resize"}`` of the
    ``stfn prepare`` manifest) so that ``stfn predict`` can prepare new videos the same way.
    ``inherited`` (:func:`inherited_videos`) records the videos that the checkpoints this one was
    initialised from trained on (``{"sources": [paths], "videos": [keys]}``): the leak check of
    ``stfn eval`` refuses them too (:func:`seen_videos`).
    ``best`` / ``best_epoch``: the best validation of the run so far and the epoch (1-based) whose
    weights ``best.pt`` holds, so that a resume knows the true best whatever became of ``best.pt``.
    ``command``: the command line that trained it (for the model card of ``stfn export --format hub``).
    ``processes``: how the run was spread over processes (:func:`stfn.engine.run_folder.processes_record`).
    """
    metrics = {k: v for k, v in (metrics or {}).items() if k != "predictions"}
    best = {k: v for k, v in (best or {}).items() if k != "predictions"}
    return {
        "model": model.state_dict(),
        "config": config_to_dict(cfg),
        "classes": list(classes),
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": get_rng_state(),
        "dataset": to_plain_types(dataset or {}),
        "train_videos": list(train_videos or []),
        "metrics": to_plain_types(metrics),
        "history": to_plain_types(history or []),
        "prepare": to_plain_types(prepare or {}),
        "inherited": to_plain_types(inherited or {"sources": [], "videos": []}),
        "best": to_plain_types(best),
        "best_epoch": int(best_epoch),
        "command": str(command),
        "processes": to_plain_types(processes or {}),
        "stfn_version": __version__,
    }


def save_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and ``os.replace`` (a crash leaves the old file)."""
    atomic_torch_save(ckpt, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``, or a Hub folder or repo id (:mod:`stfn.engine.hub`:
    safetensors only); a clear :class:`CheckpointError` otherwise."""
    given, path = str(path), hub.resolve_source(path)
    if path.is_dir():
        ckpt = _checked(hub.load_folder(path, map_location), path)
        if hub.is_repo_id(given):
            ckpt["source"] = {"format": "hub", "repo": given, "path": str(path)}
        return ckpt
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {e.strerror or e}") from None
    except Exception as e:  # unpickling errors come in many types: say what the file is instead
        raise CheckpointError(f"{what_is_wrong(path, str(e))}") from None
    return _checked(ckpt, path)


def _checked(ckpt: Any, path: Path) -> dict[str, Any]:
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(
            f"'{path}' is not an stfn checkpoint (it lacks the keys {', '.join(REQUIRED_KEYS)})"
        )
    return ckpt


_CODE_OPCODES = ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD")
_SAFE_MODULES = ("torch", "collections", "_codecs", "builtins")  # what torch.save itself refers to


def _pickle_globals(data: bytes) -> tuple[list[str], bool]:
    """The ``module.name`` globals a pickle refers to (read with :mod:`pickletools`, which runs
    nothing) and whether the stream is complete (it reached its STOP opcode)."""
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                strings = (strings + [arg])[-2:]
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                names.append(".".join(strings))
            if op.name == "STOP":
                return names, True
    except (ValueError, IndexError, EOFError):
        pass
    return names, False


def what_is_wrong(path: Path, error: str) -> str:
    """One sentence on why ``torch.load(path, weights_only=True)`` failed with ``error``: the file
    is empty, truncated, not a checkpoint, or a pickle with code in it (never advice to load it
    without the safety check)."""
    size = path.stat().st_size
    if size == 0:
        return f"checkpoint '{path}' is empty (0 bytes): an interrupted copy or download?"
    with open(path, "rb") as f:
        head = f.read(4)
    truncated = (f"checkpoint '{path}' is truncated or damaged ({size} bytes, an incomplete archive): "
                 "an interrupted copy or download? copy it again")
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                    return f"'{path}' is a TorchScript file (`stfn export --format torchscript`), not an stfn checkpoint"
                pkl = next((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")), None)
                if pkl is None:
                    return f"'{path}' is a zip archive but not a PyTorch checkpoint"
                data = z.read(pkl)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return truncated
    elif head[:1] == b"\x80":  # a pickle stream: torch's legacy format, or a bare pickle
        data = path.read_bytes()
    else:
        with open(path, "rb") as f:
            start = f.read(4096)
        try:
            start.decode("utf-8")
            kind = "it holds text"
        except UnicodeDecodeError:
            kind = "it is neither a zip archive nor a pickle"
        return f"'{path}' is not a PyTorch checkpoint ({kind})"
    names, complete = _pickle_globals(data)
    blocked = re.findall(r"GLOBAL ([\w.]+)", error)
    unsafe = blocked or [n for n in names if n.split(".")[0] not in _SAFE_MODULES]
    if unsafe:
        name = "".join(c if c.isprintable() else repr(c)[1:-1] for c in unsafe[0][:80])  # the file's own text
        return (f"checkpoint '{path}' contains code that loading it would run (it refers to {name}); "
                "stfn only loads tensors and plain values and refuses it: use a checkpoint from a source you trust")
    if not complete:
        return truncated
    return f"checkpoint '{path}' could not be read: it is damaged or was not written by torch.save"


def checkpoint_config(ckpt: dict[str, Any], path: str | os.PathLike) -> Config:
    """The resolved config stored in a checkpoint."""
    try:
        return config_from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint '{path}' holds a config this version cannot read: {e}") from None


def load_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with one sentence that says what does not fit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if wrong:
        problems.append(f"shapes differ for {len(wrong)} tensor(s), e.g. {wrong[0]} (checkpoint vs model)")
    if missing:
        problems.append(f"{len(missing)} tensor(s) are missing, e.g. '{missing[0]}'")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) are unexpected, e.g. '{unexpected[0]}'")
    if problems:
        raise CheckpointError(f"{what} does not fit the model: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild the network from the checkpoint alone: ``(model in eval mode, cfg, checkpoint)``.

    ``model.pretrained`` is forced off (the weights come from the checkpoint, no download).
    """
    ckpt = load_checkpoint(path, map_location)
    cfg = checkpoint_config(ckpt, path)
    cfg.model.pretrained = False
    try:
        model = build_model(cfg.model)
    except StfnError as e:
        raise CheckpointError(f"checkpoint '{path}' describes a model this version cannot build: {e}") from None
    load_state(model, ckpt["model"], f"checkpoint '{path}'")
    model.eval()
    return model, cfg, ckpt


def load_backbone(model: nn.Module, stream: str, path: str | os.PathLike) -> None:
    """Two-stage protocol: copy ``backbones[stream]`` from a (single-stream) checkpoint into ``model``."""
    ckpt = load_checkpoint(path)
    backbones = getattr(model, "backbones", None)
    if backbones is None or stream not in backbones:
        raise CheckpointError(f"cannot initialise the '{stream}' backbone from '{path}': the model has no such stream")
    prefix = f"backbones.{stream}."
    state = {k[len(prefix) :]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"checkpoint '{path}' has no '{stream}' backbone to initialise from")
    load_state(backbones[stream], state, f"the '{stream}' backbone of checkpoint '{path}'")


# ----------------------------------------------------------------------------- data identity

# (identity key, what it is in a sentence), in the order differences are reported
_IDENTITY_PARTS = (("dataset", "dataset"), ("num_classes", "number of classes"),
                   ("train_list_sha256", "training list"), ("test_list_sha256", "test list"))


def identity_difference(recorded: dict[str, Any], now: dict[str, Any]) -> tuple[str, str, str] | None:
    """The first part of two dataset identities (``stfn.data.splits.Split.identity``) that differs:
    ``(what, recorded value, value now)``, checksums shortened to 12 characters; ``None`` when they
    agree. A key missing on either side is not compared."""
    for key, what in _IDENTITY_PARTS:
        a, b = recorded.get(key), now.get(key)
        if a is None or b is None or a == b:
            continue
        if key.endswith("sha256"):
            a, b = f"sha256 {str(a)[:12]}", f"sha256 {str(b)[:12]}"
        return what, str(a), str(b)
    return None


def seen_videos(ckpt: dict[str, Any]) -> tuple[set[str], set[str]]:
    """``(own training videos, inherited ones)`` of a checkpoint: the keys it trained on, and those the
    checkpoints it was initialised from (and the sources of its cached features) trained on."""
    inherited = ckpt.get("inherited") or {}
    return set(ckpt.get("train_videos") or []), set(inherited.get("videos") or [])


def inherited_videos(sources: dict[str, list[str]], own: list[str]) -> dict[str, Any]:
    """What a checkpoint records as ``inherited``: ``sources`` maps each checkpoint it was initialised
    from (``train.init_rgb`` / ``init_flow``, the source of its cached features) to the videos that one
    had seen (its own and inherited, :func:`seen_videos`); ``videos`` keeps those not in ``own``."""
    mine = set(own)
    videos = sorted({v for keys in sources.values() for v in keys} - mine)
    return {"sources": sorted(sources), "videos": videos}


def inheritance(cfg: Config, own: list[str] | None = None) -> dict[str, Any]:
    """The ``inherited`` record of a fresh training of ``cfg`` (:func:`inherited_videos`): the videos
    seen by ``train.init_rgb`` / ``train.init_flow`` and by the checkpoint its cached features
    (``data.features``) came from, as ``features.json`` records them (``source_videos``) or, for an
    older features folder, as that checkpoint holds them when it still exists. Videos in ``own`` (the
    run's training list, recorded as ``train_videos``) are not repeated."""
    sources: dict[str, list[str]] = {}
    for path in (cfg.train.init_rgb, cfg.train.init_flow):
        if path and path not in sources:
            trained, inherited = seen_videos(load_checkpoint(path))
            sources[str(path)] = sorted(trained | inherited)
    if cfg.data.features:
        meta = load_features_meta(cfg.data.features)
        source = str(meta.get("source_checkpoint") or "")
        if meta.get("source_videos") is not None:
            sources[source or str(cfg.data.features)] = list(meta["source_videos"])
        elif source and Path(source).is_file():
            trained, inherited = seen_videos(load_checkpoint(source))
            sources[source] = sorted(trained | inherited)
    return inherited_videos(sources, list(own or []))


def check_resume_identity(state: dict[str, Any], identity: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse to resume ``path`` (a ``last.pt``) on another data set than the one it started on: the
    split number and :func:`identity_difference` of its recorded ``dataset`` against ``identity``."""
    recorded = state.get("dataset") or {}
    before, now = recorded.get("split"), identity.get("split")
    if before is not None and now is not None and int(before) != int(now):
        raise CheckpointError(f"cannot resume '{path}' on split {now}: the run trained on split {before} "
                              "(resume with its own data, or start a new run in another --out)")
    diff = identity_difference(recorded, identity)
    if diff:
        what, there, here = diff
        raise CheckpointError(f"cannot resume '{path}' on another data set: its {what} differs ({there} in the "
                              f"run, {here} now); resume with its own data, or start a new run in another --out")
