"""The grids of ``stfn ablate``: ``--grid key=v1,v2`` parsed into axes, their combinations (every one,
or one axis at a time around the base config), and each combination's overrides, label and folder
name (:mod:`stfn.study.ablate` runs them)."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from stfn.config import ConfigError, apply_overrides, config_from_dict

__all__ = ["combo_name", "combo_overrides", "combo_slug", "expand_grid", "get_key", "parse_grid", "short_key",
           "split_values", "fmt_value"]


def split_values(text: str) -> list[str]:
    """Split ``"a,[1,3],{x: 1}"`` on the commas outside brackets and braces -> ``["a", "[1,3]", "{x: 1}"]``."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    if depth != 0:
        raise ConfigError(f"grid values '{text}' have unbalanced brackets")
    return out


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``["model.head.blocks=1,2,3", ...]`` -> ``[("model.head.blocks", [1, 2, 3]), ...]``.

    Values are YAML (``true``, ``0.5``, ``[1,3,5]``, ``sum``). Every key is checked against the config
    tree now, so a typo fails before any training starts.
    """
    axes: list[tuple[str, list[Any]]] = []
    seen: set[str] = set()
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"grid '{spec}' must look like key.path=value1,value2")
        key, raw = (s.strip() for s in spec.split("=", 1))
        if not key or not raw:
            raise ConfigError(f"grid '{spec}' needs a key and at least one value")
        if key in seen:
            raise ConfigError(f"grid key '{key}' is given twice")
        seen.add(key)
        values = []
        for v in split_values(raw):
            if v == "":
                raise ConfigError(f"grid '{spec}' has an empty value")
            try:
                values.append(yaml.safe_load(v))
            except yaml.YAMLError:
                raise ConfigError(f"grid '{spec}': value '{v}' is not valid YAML") from None
        for v in values:  # validates key and value type against the dataclass tree
            config_from_dict(apply_overrides({}, combo_overrides({key: v})))
        axes.append((key, values))
    return axes


def get_key(d: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        d = d[part]
    return d


def expand_grid(
    axes: Sequence[tuple[str, Sequence[Any]]], base: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """All combinations of the axes (cartesian product, first axis varying slowest).

    With ``base`` (the config as a nested dict), vary one axis at a time instead: the first
    combination is the base itself (``{}``), then each axis value that differs from the base value.
    """
    if base is None:
        keys = [k for k, _ in axes]
        return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(v for _, v in axes))]
    combos: list[dict[str, Any]] = [{}]
    for key, values in axes:
        ref = get_key(base, key)
        combos += [{key: v} for v in values if v != ref]
    return combos


def combo_overrides(combo: Mapping[str, Any]) -> list[str]:
    """``{"model.head.kernel_sizes": [1, 3]}`` -> ``["model.head.kernel_sizes=[1, 3]"]`` (JSON is YAML)."""
    return [f"{k}={json.dumps(v)}" for k, v in combo.items()]


def short_key(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def fmt_value(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


def combo_name(combo: Mapping[str, Any]) -> str:
    """Human label: ``"fusion=sum blocks=2"``; the base configuration is ``"base"``."""
    return " ".join(f"{short_key(k)}={fmt_value(v)}" for k, v in combo.items()) or "base"


def combo_slug(combo: Mapping[str, Any]) -> str:
    """Folder name: readable part plus a short hash of the exact keys and values (unique, stable)."""
    digest = hashlib.sha1(json.dumps(combo, sort_keys=True).encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9=.,_-]+", "_", "_".join(f"{short_key(k)}={fmt_value(v)}" for k, v in combo.items()))
    return f"{readable[:60] or 'base'}-{digest}"
