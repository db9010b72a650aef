"""Colour variants of the catalogue's classes: more classes than the catalogue's 23 (the ``stress`` preset).

Variant ``k`` (1-5) of class ``Name`` is ``NameV<k>``: the same scenes (drawn with ``k`` mixed into the
seed, so its videos are new ones) with the colours of every frame transformed, so the variants of one
class differ by colour and are told apart as reliably as colours are. The transforms are chosen so
that no variant equals another class: a cyclic shift of the channels (red -> green -> blue -> red) or
an inversion followed by one, never the red/green swap that would turn ``RedLeftGreenRight`` into its
twin ``GreenLeftRedRight``. A variant's twin is the variant of the twin (``SlideRightV2`` /
``SlideLeftV2``).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from stfn.data.synthetic.scenes import CATALOGUE, SyntheticClass

__all__ = ["VARIANTS", "split_variant", "tint", "variant_class", "variant_classes", "variant_name"]

VARIANTS = 5
_NAME = re.compile(r"(?P<base>[A-Za-z]+)V(?P<k>[1-9])")
# k -> (channel order, inverted first)
_TRANSFORMS = {1: ((1, 2, 0), False), 2: ((2, 0, 1), False), 3: ((0, 1, 2), True), 4: ((1, 2, 0), True),
               5: ((2, 0, 1), True)}


def split_variant(name: str) -> tuple[str, int]:
    """``(catalogue class, variant)`` of a class name (variant 0: the catalogue class itself); a name
    that is neither is returned as ``(name, 0)`` for the caller to refuse."""
    m = _NAME.fullmatch(name)
    if name not in CATALOGUE and m and m["base"] in CATALOGUE and 1 <= int(m["k"]) <= VARIANTS:
        return m["base"], int(m["k"])
    return name, 0


def variant_name(base: str | None, k: int) -> str | None:
    return None if base is None else base if k == 0 else f"{base}V{k}"


def variant_class(name: str) -> SyntheticClass:
    """The :class:`SyntheticClass` of a catalogue class or a variant (its name and twin's name)."""
    base, k = split_variant(name)
    c = CATALOGUE[base]
    return c if k == 0 else dataclasses.replace(c, name=name, twin=variant_name(c.twin, k))


def variant_classes(count: int) -> list[str]:
    """The first ``count`` of: the catalogue, then its variants 1, 2, ... in catalogue order (the
    catalogue lists its classes without a twin first and each twin right after its pair, so a prefix
    ending after a twin-free class or a pair keeps every pair whole)."""
    names = [variant_name(n, k) for k in range(VARIANTS + 1) for n in CATALOGUE]
    if not 1 <= count <= len(names):
        raise ValueError(f"between 1 and {len(names)} classes, got {count}")
    return names[:count]


def tint(frames: np.ndarray, k: int) -> np.ndarray:
    """RGB ``frames (..., 3)`` uint8 in variant ``k``'s colours (``k = 0``: unchanged)."""
    if k == 0:
        return frames
    order, invert = _TRANSFORMS[k]
    out = 255 - frames if invert else frames
    return np.ascontiguousarray(out[..., list(order)])
