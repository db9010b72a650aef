"""``stfn ablate``: run a grid of design choices over several seeds and tabulate mean and spread.

A grid is a list of axes, each a config key and the values to try::

    axes = parse_grid(["model.head.fusion=none,sum,multiply", "model.head.kernel_sizes=[1,3],[1,3,5]"])
    combos = expand_grid(axes)                    # every combination (cartesian product)
    combos = expand_grid(axes, base=cfg_dict)     # or one axis at a time around the base config

Each (combination, seed) trains in its own folder ``OUT/runs/<combo>/seed<S>/`` and ends with a
``result.json`` written atomically; a re-run skips the finished ones and resumes a half-finished one
from its ``last.pt``. The table (``OUT/ablation.md`` and ``OUT/ablation.json``) has one row per
combination with the mean, standard deviation and min–max over seeds of every metric.

Protocols, chosen per combination:

* **head-only** on cached per-frame features (``--features DIR`` or ``data.features`` in the config,
  which also freezes the backbones): seconds per run;
* **backbone changes** (``model.backbone``, ``model.flow_length``, input size, ...) cannot reuse those
  features. With features, such a combination first builds its own: single-stream TSN backbones are
  trained and their features extracted (the demo's two-stage protocol,
  :func:`stfn.study.protocol.build_features`),
  once per distinct backbone setting (for features of an untrained or ImageNet backbone, the new
  backbone's features are simply extracted), then the head trains on them. Without features, every
  run is end to end;
* ``data.frames`` with features: up to the number of cached positions, the head samples T of them
  (one per segment); beyond it, features are extracted again at the new T from the same backbones.

The metrics are those of the last epoch (the synthetic benchmark has no validation split, so no
model is selected on the test split); on the synthetic benchmark they include the accuracy per class
group and the within-pair accuracy of the temporal-order pairs (:mod:`stfn.study.analysis`).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stfn.config import Config, apply_overrides, config_from_dict, config_to_dict, load_config
from stfn.engine.checkpoint import checkpoint_config, load_checkpoint
from stfn.engine.features import extract_features, load_features_meta
from stfn.engine.train import train
from stfn.errors import ParameterError, StfnError
from stfn.fileio import atomic_write_json, atomic_write_text
from stfn.models import check_model_config
from stfn.study.analysis import class_groups, group_accuracy, load_classes_meta, temporal_pairs
from stfn.study.grid import (
    combo_name,
    combo_overrides,
    combo_slug,
    expand_grid,
    fmt_value,
    get_key,
    short_key,
)
from stfn.study.protocol import build_features, train_runs
from stfn.study.report import fmt_summary, markdown_table, summarize

__all__ = [
    "ablation_markdown",
    "run_ablation",
    "write_table",
]

# Keys whose change alters the per-frame features themselves: a new backbone must be trained.
BACKBONE_KEYS: frozenset[str] = frozenset(
    {
        "model.backbone",
        "model.pretrained",
        "model.flow_length",
        "model.cross_modality_init",
        "data.crop_size",
        "data.scale_size",
        "data.root",
    }
)


# ----------------------------------------------------------------------------- the runner

METRICS: tuple[tuple[str, str], ...] = (
    ("overall", "top-1"),
    ("mean_class_acc", "mean class"),
    ("appearance", "appearance"),
    ("motion", "motion"),
    ("temporal_order", "order"),
    ("temporal_order_pair", "order pair"),
    ("appearance_motion", "app+motion"),
)


def _find_classes_meta(cfg: Config, features: dict[str, Any] | None, log: Any) -> dict[str, Any] | None:
    """The synthetic benchmark's ``classes.json`` next to the split files of the config or, with cached
    ``features``, of the data they were extracted from (the config's may point elsewhere: the demo's
    relative ``runs/demo`` seen from another folder). A synthetic dataset without one is said once:
    its table then has no accuracy per class group."""
    places = [cfg.data.splits, ((features or {}).get("data") or {}).get("splits", "")]
    for splits in filter(None, places):
        for d in (Path(splits), Path(splits).parent):
            if (d / "classes.json").is_file():
                return load_classes_meta(d / "classes.json")
    if cfg.data.dataset == "synthetic":
        log(f"ablate: no classes.json next to {' or '.join(map(repr, filter(None, places))) or 'any split folder'}: "
            "the table has no accuracy per class group (point data.splits at the benchmark's splits)")
    return None


def _run_metrics(result: dict[str, Any], meta: dict[str, Any] | None) -> dict[str, Any]:
    """Metrics of the last epoch of a training run (percentages), per class group when known."""
    last = result["last"] or {}
    out = {"overall": last.get("top1"), "mean_class_acc": last.get("mean_class_acc"), "top5": last.get("top5")}
    preds = last.get("predictions")
    if meta is not None and preds:
        classes = list(load_checkpoint(Path(result["out_dir"]) / "last.pt")["classes"])
        acc = group_accuracy(preds, class_groups(meta, classes), temporal_pairs(meta, classes))
        out.update({k: acc.get(k) for k, _ in METRICS if k not in ("overall", "mean_class_acc")})
    return out


class _FeatureSource:
    """Cached features for each combination: the given folder, or new ones where a combination
    changes the backbone (two-stage: new TSN backbones, then extraction) or asks for more frames."""

    def __init__(self, root: Path, out_dir: Path, progress: bool, log: Any) -> None:
        self.root, self.out_dir, self.progress, self.log = root, out_dir, progress, log
        self.meta = load_features_meta(root)

    def for_config(self, cfg: Config, combo: Mapping[str, Any]) -> tuple[Path, str]:
        """(features folder, protocol) for ``cfg`` (the base config changed by ``combo``); builds the
        folder when ``combo`` changes a backbone key or asks for more frames than are cached."""
        made = {"model": self.meta["model"], "data": self.meta["data"]}
        changed = {k: v for k, v in combo.items() if k in BACKBONE_KEYS and v != get_key(made, k)}
        frames = max(int(self.meta["frames"]), cfg.data.frames)
        if not changed and frames == int(self.meta["frames"]):
            return self.root, "head-only"
        folder = self.out_dir / "features" / combo_slug({**changed, "frames": frames})
        if changed:
            return self._new_backbones(cfg, changed, frames, folder), "two-stage, new backbones"
        self.log(f"ablate: extracting {frames} positions per video into {folder}")
        extract_features(self._source(), folder, frames=frames, progress=self.progress)
        return folder, f"head-only, {frames} positions extracted"

    def _source(self) -> str | Config:
        """The checkpoint the cached features came from, else the config they were extracted with."""
        ckpt = self.meta.get("source_checkpoint") or ""
        if ckpt and Path(ckpt).is_file():
            return ckpt
        return config_from_dict({"model": self.meta["model"], "data": self.meta["data"]})

    def _new_backbones(self, cfg: Config, changed: dict[str, Any], frames: int, folder: Path) -> Path:
        """Features of the backbones ``changed`` asks for: extracted from an untrained or ImageNet backbone,
        or from new TSN backbones trained by the two-stage protocol."""
        source = self._source()
        if not isinstance(source, str):  # features of an untrained (e.g. ImageNet) backbone: same for the new one
            new = copy.deepcopy(source)
            for k, v in changed.items():
                new = config_from_dict(apply_overrides(config_to_dict(new), combo_overrides({k: v})))
            self.log(f"ablate: extracting features of {combo_name(changed)} into {folder}")
            return extract_features(new, folder, frames=frames, progress=self.progress)
        tsn = checkpoint_config(load_checkpoint(source), source)
        tsn = config_from_dict(apply_overrides(config_to_dict(tsn), combo_overrides(changed)))
        self.log(f"ablate: training TSN backbones with {combo_name(changed)} (two-stage protocol) in {folder.parent}")
        return build_features(tsn, folder.with_name(folder.name + "-backbones"), folder, frames, self.progress)


def run_ablation(
    config: str | os.PathLike | Config,
    axes: Sequence[tuple[str, Sequence[Any]]],
    out_dir: str | os.PathLike,
    *,
    seeds: int = 1,
    features: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    one_at_a_time: bool = False,
    jobs: int = 1,
    progress: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Train every combination of ``axes`` for ``seeds`` seeds; write ``ablation.md``/``ablation.json``.

    ``config`` is a YAML path or a :class:`Config`; ``overrides`` are ``--set`` strings applied first.
    ``features`` (or ``data.features`` in the config) selects head-only training on cached features.
    Seeds are ``train.seed + s`` for ``s < seeds``. Finished runs (``result.json``) are skipped.
    ``jobs`` > 1 trains that many runs at a time, one torch thread each (each run's numbers are then
    those of a one-thread run, as with ``jobs=1`` under ``--threads 1``); the features every
    combination needs are built first, one after another.
    Returns the table as a dict (``rows`` with per-metric ``summarize`` results).
    """
    if seeds < 1 or jobs < 1:
        raise ParameterError(("seeds", "jobs"), f"must be >= 1, got {seeds} and {jobs}")
    base = _base_config(config, overrides, features)
    out = Path(out_dir)
    combos, cfgs = _combo_configs(base, axes, one_at_a_time)
    feature_source = _FeatureSource(Path(base.data.features), out, progress, log) if base.data.features else None
    meta = _find_classes_meta(base, feature_source.meta if feature_source else None, log)
    keys = [k for k, _ in axes]
    table = {"config": str(config) if not isinstance(config, Config) else "config", "keys": keys,
             "seeds": seeds, "one_at_a_time": one_at_a_time, "rows": []}
    plans = []
    for ci, (combo, cfg) in enumerate(zip(combos, cfgs, strict=True)):
        protocol = "end to end"
        if feature_source is not None:
            feats, protocol = feature_source.for_config(cfg, combo)
            cfg.data.features = str(feats)
        plans.append((combo, cfg, protocol))
        if jobs <= 1:  # one run at a time, with this process's threads; the table grows after each combination
            runs = [_run_seed(cfg, combo, s, protocol, meta, out, f"{ci * seeds + s + 1}/{len(combos) * seeds}",
                              progress, log) for s in range(seeds)]
            table["rows"].append(_aggregate(combo, protocol, runs))
            write_table(table, out)
    if jobs > 1:
        for (combo, _, protocol), runs in zip(plans, _run_parallel(plans, seeds, meta, out, jobs, progress, log),
                                              strict=True):
            table["rows"].append(_aggregate(combo, protocol, runs))
        write_table(table, out)
    return table


def _base_config(config: str | os.PathLike | Config, overrides: Sequence[str],
                 features: str | os.PathLike | None) -> Config:
    """The base config with ``--set`` overrides and ``--features`` applied (features freeze the backbones)."""
    base = copy.deepcopy(config) if isinstance(config, Config) else load_config(config, list(overrides))
    if isinstance(config, Config) and overrides:
        base = config_from_dict(apply_overrides(config_to_dict(base), list(overrides)))
    if features:
        base.data.features = str(features)
    if base.data.features:
        base.model.freeze_backbone = True
    return base


def _combo_configs(base: Config, axes: Sequence[tuple[str, Sequence[Any]]],
                   one_at_a_time: bool) -> tuple[list[dict[str, Any]], list[Config]]:
    """The combinations and their configs, every one checked before anything trains."""
    base_dict = config_to_dict(base)
    combos = expand_grid(axes, base=base_dict if one_at_a_time else None)
    cfgs = []
    for combo in combos:
        # a deep copy: config.apply_overrides writes into the nested sections of the dict it is given
        cfg = config_from_dict(apply_overrides(copy.deepcopy(base_dict), combo_overrides(combo)))
        check_model_config(cfg.model)
        cfgs.append(cfg)
    return combos, cfgs


def _seed_run(cfg: Config, combo: dict[str, Any], s: int, out: Path) -> tuple[Config, Path]:
    """Seed ``train.seed + s`` of one combination: its config and run folder."""
    run_cfg = copy.deepcopy(cfg)
    run_cfg.train.seed = cfg.train.seed + s
    run_cfg.name = f"ablate-{combo_slug(combo)}-seed{run_cfg.train.seed}"
    return run_cfg, out / "runs" / combo_slug(combo) / f"seed{run_cfg.train.seed}"


def _finished(run_cfg: Config, run_dir: Path) -> dict[str, Any] | None:
    """The run's ``result.json`` when it has one (of this very configuration), else None."""
    done = run_dir / "result.json"
    if not done.is_file():
        return None
    res = json.loads(done.read_text())
    if res.get("config") != config_to_dict(run_cfg):
        raise StfnError(f"'{run_dir}' holds a run of a different configuration; use another --out")
    return res


def _record(result: dict[str, Any], combo: dict[str, Any], run_cfg: Config, protocol: str,
            meta: dict[str, Any] | None, seconds: float, run_dir: Path) -> dict[str, Any]:
    """Write and return the run's ``result.json`` (atomic: a run without one is trained again)."""
    res = {"combo": combo, "seed": run_cfg.train.seed, "protocol": protocol, "metrics": _run_metrics(result, meta),
           "time_s": round(seconds, 2), "config": config_to_dict(run_cfg)}
    atomic_write_json(run_dir / "result.json", res)
    return res


def _run_seed(cfg: Config, combo: dict[str, Any], s: int, protocol: str, meta: dict[str, Any] | None, out: Path,
              counter: str, progress: bool, log: Any) -> dict[str, Any]:
    """Seed ``train.seed + s`` of one combination, in this process with its thread count: its
    ``result.json``, trained now unless it exists (``counter``: ``"k/total"`` for the progress line)."""
    run_cfg, run_dir = _seed_run(cfg, combo, s, out)
    res = _finished(run_cfg, run_dir)
    if res is not None:
        log(f"[ablate {counter}] {combo_name(combo)} seed {run_cfg.train.seed}: done before, skipped")
        return res
    log(f"[ablate {counter}] {combo_name(combo)} seed {run_cfg.train.seed} ({protocol})")
    start = time.perf_counter()
    result = train(run_cfg, run_dir, resume=True, progress=progress).to_dict()
    return _record(result, combo, run_cfg, protocol, meta, time.perf_counter() - start, run_dir)


def _run_parallel(plans: list[tuple[dict[str, Any], Config, str]], seeds: int, meta: dict[str, Any] | None,
                  out: Path, jobs: int, progress: bool, log: Any) -> list[list[dict[str, Any]]]:
    """Every (combination, seed) of ``plans`` not finished before, ``jobs`` at a time with one thread
    each (:func:`stfn.study.protocol.train_runs`); each combination's ``result.json`` s, in seed order."""
    runs: dict[tuple[int, int], dict[str, Any]] = {}
    pending = []
    for ci, (combo, cfg, _) in enumerate(plans):
        for s in range(seeds):
            run_cfg, run_dir = _seed_run(cfg, combo, s, out)
            res = _finished(run_cfg, run_dir)
            if res is not None:
                runs[(ci, s)] = res
            else:
                pending.append(((ci, s), (f"{combo_name(combo)} seed {run_cfg.train.seed}", run_cfg, run_dir)))
    log(f"ablate: {len(plans) * seeds} runs, {len(runs)} done before, {len(pending)} to train")
    results = train_runs([job for _, job in pending], jobs, log, progress)
    for ((ci, s), (_, run_cfg, run_dir)), result in zip(pending, results, strict=True):
        combo, _, protocol = plans[ci]
        runs[(ci, s)] = _record(result, combo, run_cfg, protocol, meta, result["wall_s"], run_dir)
    return [[runs[(ci, s)] for s in range(seeds)] for ci in range(len(plans))]


def _aggregate(combo: dict[str, Any], protocol: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: the combination and ``summarize`` over its seeds of every metric."""
    metrics = {k: summarize([r["metrics"].get(k) for r in runs]) for k, _ in METRICS}
    return {"combo": combo, "name": combo_name(combo), "slug": combo_slug(combo), "protocol": protocol,
            "seeds": [r["seed"] for r in runs], "metrics": metrics,
            "time_s": summarize([r["time_s"] for r in runs])["mean"]}


def ablation_markdown(table: dict[str, Any]) -> str:
    """One row per combination: what changed (one column per key, or one ``change`` column when one
    axis varies at a time), the protocol, then mean ± std (min–max) over seeds of each metric."""
    keys = table["keys"]
    metrics = [(k, h) for k, h in METRICS if any(r["metrics"][k]["n"] for r in table["rows"])]
    lead = ["change"] if table.get("one_at_a_time") else [short_key(k) for k in keys]
    header = lead + ["protocol"] + [h for _, h in metrics] + ["seeds", "s/run"]
    rows = []
    for r in table["rows"]:
        if table.get("one_at_a_time"):
            vals = [r["name"] if r["combo"] else "base"]
        else:
            vals = [fmt_value(r["combo"][k]) for k in keys]
        rows.append(vals + [r["protocol"]] + [fmt_summary(r["metrics"][k]) for k, _ in metrics]
                    + [str(len(r["seeds"])), f"{r['time_s']:.0f}"])
    align = "l" * (len(lead) + 1) + "r" * (len(metrics) + 2)
    return markdown_table(header, rows, align)


def write_table(table: dict[str, Any], out_dir: str | os.PathLike) -> None:
    """``ablation.json`` and ``ablation.md`` in ``out_dir`` (atomic)."""
    out = Path(out_dir)
    atomic_write_json(out / "ablation.json", table)
    note = ("Test accuracy (%) of the last epoch: mean ± std (min–max) over seeds"
            + (", one axis varied at a time around the base config" if table.get("one_at_a_time") else "")
            + ".\n\n")
    atomic_write_text(out / "ablation.md", note + ablation_markdown(table))
