"""The checkpoints a server holds: one :class:`~stfn.predict.Predictor` per checkpoint, named by its
file, plus the same predictor with other test crops, made on first use (the network is shared)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stfn.errors import StfnError
from stfn.predict import Predictor

__all__ = ["ModelEntry", "load_models", "model_names"]

CROPS = (1, 3, 10)


@dataclass
class ModelEntry:
    """A loaded checkpoint: its ``name`` in the API, the checkpoint's file name and its predictor."""

    name: str
    checkpoint: str
    predictor: Predictor
    _variants: dict[int, Predictor] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def with_crops(self, crops: int | None) -> Predictor:
        """The predictor with ``crops`` test views (``None``: the checkpoint's own)."""
        if crops is None or crops == self.predictor.crops:
            return self.predictor
        with self._lock:
            if crops not in self._variants:
                self._variants[crops] = self.predictor.with_crops(crops)
            return self._variants[crops]

    def describe(self) -> dict[str, Any]:
        """``/v1/models`` entry: name, checkpoint file, model card (classes, architecture, training data
        and split, recorded accuracy) and the prediction settings."""
        return {"name": self.name, "checkpoint": self.checkpoint, "card": self.predictor.card,
                "settings": self.predictor.settings()}


def model_names(paths: list[Path]) -> list[str]:
    """Unique API names: the file stem, with the parent folder when two stems clash, then a number."""
    stems = [p.stem for p in paths]
    names = [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 and p.parent.name else p.stem for p in paths]
    out: list[str] = []
    for n in names:
        name, i = n, 2
        while name in out:
            name, i = f"{n}-{i}", i + 1
        out.append(name)
    return out


def load_models(paths: list[str | os.PathLike], **kwargs: Any) -> dict[str, ModelEntry]:
    """Load each checkpoint (``kwargs`` go to :meth:`Predictor.from_checkpoint`); the first is the default."""
    files = [Path(p) for p in paths]
    for p in files:
        if not p.is_file():
            raise StfnError(f"checkpoint '{p}' does not exist" if not p.exists() else f"checkpoint '{p}' is not a file")
    return {name: ModelEntry(name, p.name, Predictor.from_checkpoint(p, **kwargs))
            for name, p in zip(model_names(files), files, strict=True)}
