"""Tests of ``stfn ablate`` (``stfn.study.ablate``): grid parsing and expansion, the table, the runner on
a tiny grid."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from stfn.cli import main
from stfn.config import ConfigError, config_to_dict, load_config
from stfn.data.prepare.run import prepare_dataset
from stfn.data.synthetic.generate import generate
from stfn.engine.features import extract_features
from stfn.errors import ParameterError, StfnError
from stfn.study.ablate import ablation_markdown, run_ablation, write_table
from stfn.study.demo import base_config, head_config
from stfn.study.grid import combo_name, combo_overrides, combo_slug, expand_grid, parse_grid, split_values
from stfn.study.presets import PRESETS
from stfn.study.report import summarize

# ----------------------------------------------------------------------------- grid parsing


def test_split_values_respects_brackets():
    assert split_values("none,sum, multiply") == ["none", "sum", "multiply"]
    assert split_values("[1,3],[1,3,5],[3]") == ["[1,3]", "[1,3,5]", "[3]"]
    with pytest.raises(ConfigError, match="unbalanced"):
        split_values("[1,3")


def test_parse_grid_types_and_lists():
    axes = parse_grid(
        [
            "model.head.fusion=none,sum",
            "model.head.blocks=1,2,3",
            "model.head.kernel_sizes=[1,3],[1,3,5]",
            "model.head.residual=true,false",
            "model.head.dropout=0.0,0.5",
        ]
    )
    assert axes == [
        ("model.head.fusion", ["none", "sum"]),
        ("model.head.blocks", [1, 2, 3]),
        ("model.head.kernel_sizes", [[1, 3], [1, 3, 5]]),
        ("model.head.residual", [True, False]),
        ("model.head.dropout", [0.0, 0.5]),
    ]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("model.head.fusoin=sum", "model.head.fusoin"),
        ("model.head.blocks=two", "model.head.blocks"),
        ("model.head.blocks", "key.path=value"),
        ("model.head.blocks=", "at least one value"),
        ("model.head.blocks=1,,2", "empty value"),
    ],
)
def test_parse_grid_errors_name_the_key(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_grid([spec])


def test_parse_grid_rejects_duplicate_key():
    with pytest.raises(ConfigError, match="twice"):
        parse_grid(["model.head.blocks=1", "model.head.blocks=2"])


def test_expand_grid_product_and_one_at_a_time():
    axes = [("model.head.fusion", ["none", "sum", "gated"]), ("model.head.blocks", [1, 2])]
    combos = expand_grid(axes)
    assert len(combos) == 6
    assert combos[0] == {"model.head.fusion": "none", "model.head.blocks": 1}
    assert combos[1] == {"model.head.fusion": "none", "model.head.blocks": 2}
    assert len({combo_slug(c) for c in combos}) == 6

    base = config_to_dict(load_config(None, ["model.head.fusion=sum", "model.head.blocks=2"]))
    oat = expand_grid(axes, base=base)
    # base first, then only the values that differ from it
    assert oat == [{}, {"model.head.fusion": "none"}, {"model.head.fusion": "gated"}, {"model.head.blocks": 1}]
    assert combo_name({}) == "base"


def test_combo_overrides_round_trip_through_config():
    combo = {"model.head.kernel_sizes": [3, 5], "model.head.residual": False, "model.head.pooling": "max"}
    cfg = load_config(None, combo_overrides(combo))
    assert cfg.model.head.kernel_sizes == [3, 5]
    assert cfg.model.head.residual is False
    assert cfg.model.head.pooling == "max"
    assert combo_name(combo) == "kernel_sizes=[3,5] residual=off pooling=max"
    slug = combo_slug(combo)
    assert "/" not in slug and " " not in slug
    assert slug != combo_slug({**combo, "model.head.pooling": "avg"})


# ----------------------------------------------------------------------------- the table


def _row(combo: dict, values: list[float], protocol: str = "head-only") -> dict:
    metrics = {k: summarize(values if k == "overall" else []) for k in
               ("overall", "mean_class_acc", "appearance", "motion", "temporal_order", "temporal_order_pair",
                "appearance_motion")}
    return {"combo": combo, "name": combo_name(combo), "slug": combo_slug(combo), "protocol": protocol,
            "seeds": list(range(len(values))), "metrics": metrics, "time_s": 12.4}


def test_ablation_markdown_one_column_per_key_and_only_measured_metrics():
    table = {"keys": ["model.head.fusion", "model.head.blocks"], "one_at_a_time": False,
             "rows": [_row({"model.head.fusion": "sum", "model.head.blocks": 2}, [70.0, 90.0]),
                      _row({"model.head.fusion": "none", "model.head.blocks": 1}, [60.0])]}
    assert ablation_markdown(table) == (
        "| fusion | blocks | protocol | top-1 | seeds | s/run |\n"
        "| --- | --- | --- | ---: | ---: | ---: |\n"
        "| sum | 2 | head-only | 80.0 ± 14.1 (70.0–90.0) | 2 | 12 |\n"
        "| none | 1 | head-only | 60.0 | 1 | 12 |\n")


def test_write_table_one_at_a_time(tmp_path):
    table = {"config": "config", "keys": ["model.head.residual"], "seeds": 1, "one_at_a_time": True,
             "rows": [_row({}, [50.0], "end to end"), _row({"model.head.residual": False}, [40.0], "end to end")]}
    write_table(table, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "ablation.json").read_text()) == table
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert md.startswith("Test accuracy (%) of the last epoch: mean ± std (min–max) over seeds, one axis varied "
                         "at a time around the base config.\n\n| change | protocol | top-1 |")
    assert "| base | end to end | 50.0 |" in md and "| residual=off | end to end | 40.0 |" in md


# ----------------------------------------------------------------------------- the runner on a tiny grid

@pytest.fixture(scope="module")
def tiny_features(tmp_path_factory):
    """A reduced tiny synthetic benchmark, prepared, and features of a random ``cnn_small`` (4 positions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ablate")
    # 4 classes of the tiny preset (one temporal-order pair for the within-pair accuracy): 20 videos
    generate(root / "synth", preset="tiny", seed=0, classes=["Square", "Disk", "LeftThenRight", "RightThenLeft"])
    prepare_dataset(root / "synth" / "videos", root / "prepared", flow="dis", bound=5.0, workers=1, progress=False)
    cfg = load_config(None, [
        "model.backbone=cnn_small", "model.flow_length=2", "model.arch=stfn", "data.dataset=synthetic",
        f"data.root={root / 'prepared'}", f"data.splits={root / 'synth' / 'splits'}", "data.frames=4",
        "data.scale_size=32", "data.crop_size=32", "data.num_workers=0", "train.device=cpu",
        "train.batch_size=8", "train.epochs=1", "train.optimizer=adamw", "train.lr=0.001", "train.amp=none",
        "model.head.hidden_dim=32",
    ])
    feats = extract_features(cfg, root / "features", device="cpu", progress=False)
    yield cfg, feats, root
    torch.set_num_threads(threads)


def test_runner_tiny_grid_resumes_and_aggregates(tiny_features, tmp_path):
    cfg, feats, _ = tiny_features
    out = tmp_path / "abl"
    lines: list[str] = []
    axes = parse_grid(["model.head.fusion=none,sum"])
    table = run_ablation(cfg, axes, out, seeds=2, features=feats, progress=False, log=lines.append)

    assert [r["name"] for r in table["rows"]] == ["fusion=none", "fusion=sum"]
    for row in table["rows"]:
        assert row["seeds"] == [0, 1]
        assert row["protocol"] == "head-only"
        top1 = row["metrics"]["overall"]
        assert top1["n"] == 2 and 0.0 <= top1["min"] <= top1["mean"] <= top1["max"] <= 100.0
        # the synthetic classes.json is found: per-group accuracies and the within-pair accuracy
        assert row["metrics"]["temporal_order_pair"]["n"] == 2
        assert row["metrics"]["appearance"]["n"] == 2
    results = sorted(out.glob("runs/*/seed*/result.json"))
    assert len(results) == 4
    first = json.loads(results[0].read_text())
    assert first["config"]["data"]["features"] == str(feats) and first["config"]["model"]["freeze_backbone"]
    # the two seeds really are different runs
    seeds = {json.loads(p.read_text())["config"]["train"]["seed"] for p in results}
    assert seeds == {0, 1}

    md = (out / "ablation.md").read_text()
    assert "| fusion | protocol | top-1 |" in md
    assert md.count("| none |") == 1 and md.count("| sum |") == 1
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["rows"][1]["metrics"]["overall"]["values"] == table["rows"][1]["metrics"]["overall"]["values"]

    # re-running skips every finished run and gives the same table
    stamps = [p.stat().st_mtime_ns for p in results]
    lines.clear()
    again = run_ablation(cfg, axes, out, seeds=2, features=feats, progress=False, log=lines.append)
    assert sum("skipped" in line for line in lines) == 4
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert again["rows"] == json.loads(json.dumps(table["rows"]))

    # the same folder with another base configuration is refused
    other = copy.deepcopy(cfg)
    other.train.lr = 0.01
    with pytest.raises(StfnError, match="different configuration"):
        run_ablation(other, axes, out, seeds=1, features=feats, progress=False, log=lines.append)


@pytest.mark.e2e
def test_runner_jobs_train_side_by_side_with_the_numbers_of_one_thread(tiny_features, tmp_path):
    """``jobs=2``: the runs train two at a time in fresh processes, one thread each, and the table equals
    ``jobs=1`` under one thread (the suite's); a rerun skips every finished run."""
    cfg, feats, _ = tiny_features
    axes = parse_grid(["model.head.fusion=none,sum"])
    alone = run_ablation(cfg, axes, tmp_path / "one", seeds=2, features=feats, progress=False, log=lambda _: None)
    lines: list[str] = []
    side = run_ablation(cfg, axes, tmp_path / "two", seeds=2, features=feats, jobs=2, progress=False,
                        log=lines.append)
    assert lines[0] == "ablate: 4 runs, 0 done before, 4 to train" and sum("runs done" in x for x in lines) == 4
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in side["rows"]]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in alone["rows"]]
    assert (tmp_path / "two" / "ablation.md").is_file()
    lines.clear()
    run_ablation(cfg, axes, tmp_path / "two", seeds=2, features=feats, jobs=2, progress=False, log=lines.append)
    assert lines == ["ablate: 4 runs, 4 done before, 0 to train"]
    with pytest.raises(ParameterError, match=r"^seeds and jobs must be >= 1, got 1 and 0$"):
        run_ablation(cfg, axes, tmp_path / "x", features=feats, jobs=0, log=lambda _: None)


def test_runner_builds_features_for_frames_and_backbone_changes(tiny_features, tmp_path):
    cfg, feats, _ = tiny_features
    out = tmp_path / "abl"
    axes = parse_grid(["data.frames=2,6", "model.flow_length=3"])
    table = run_ablation(cfg, axes, out, seeds=1, features=feats, one_at_a_time=True, progress=False,
                         log=lambda s: None)
    names = [r["name"] for r in table["rows"]]
    assert names == ["base", "frames=2", "frames=6", "flow_length=3"]
    protocols = [r["protocol"] for r in table["rows"]]
    assert protocols[0] == protocols[1] == "head-only"  # 2 <= 4 cached positions
    assert protocols[2] == "head-only, 6 positions extracted"
    assert protocols[3] == "two-stage, new backbones"
    md = (out / "ablation.md").read_text()
    assert "| change | protocol | top-1 |" in md and "| flow_length=3 | two-stage, new backbones |" in md
    built = {json.loads((p / "features.json").read_text())["frames"]: json.loads((p / "features.json").read_text())
             for p in (out / "features").iterdir()}
    assert sorted(built) == [4, 6]  # new features: 6 positions; and 4 positions with L = 3
    assert built[4]["model"]["flow_length"] == 3 and built[6]["model"]["flow_length"] == 2
    run = json.loads(next((out / "runs").glob("flow_length*/seed0/result.json")).read_text())
    assert run["config"]["model"]["flow_length"] == 3
    assert run["config"]["data"]["features"].startswith(str(out / "features"))


def test_runner_finds_the_class_groups_through_the_features(tiny_features, tmp_path):
    """A base config whose data.splits does not resolve from here (the demo's relative runs/demo seen from
    another folder) still gets the per-group accuracies, from the splits the features were made from; a
    synthetic set with no classes.json anywhere says so in one line."""
    cfg, feats, _ = tiny_features
    moved = copy.deepcopy(cfg)
    moved.data.splits = "runs/demo/data/synthetic/splits"
    axes = [("model.head.fusion", ["sum"])]
    lines: list[str] = []
    table = run_ablation(moved, axes, tmp_path / "a", features=feats, progress=False, log=lines.append)
    assert table["rows"][0]["metrics"]["temporal_order_pair"]["n"] == 1
    assert not any("no classes.json" in line for line in lines)
    lost = tmp_path / "feats"
    shutil.copytree(feats, lost)
    meta = json.loads((lost / "features.json").read_text())
    meta["data"]["splits"] = str(tmp_path / "gone")
    (lost / "features.json").write_text(json.dumps(meta))
    table = run_ablation(moved, axes, tmp_path / "b", features=lost, progress=False, log=lines.append)
    assert table["rows"][0]["metrics"]["temporal_order_pair"]["n"] == 0
    assert sum("no classes.json next to 'runs/demo/data/synthetic/splits'" in line for line in lines) == 1


def test_runner_rejects_bad_combination_before_training(tiny_features, tmp_path):
    cfg, feats, _ = tiny_features
    with pytest.raises(ConfigError, match="model.head.fusion"):
        run_ablation(cfg, [("model.head.fusion", ["sum", "bogus"])], tmp_path, features=feats, progress=False)
    assert not (tmp_path / "runs").exists()


def test_cli_ablate_errors_are_one_sentence(capsys):
    assert main(["ablate", "--config", "does-not-exist.yaml", "--grid", "model.head.blocks=1,2"]) == 2
    assert "does-not-exist.yaml" in capsys.readouterr().err
    assert main(["ablate", "--config", "x.yaml"]) == 2
    assert "--grid" in capsys.readouterr().err


def test_ablate_config_is_the_demo_stfn(tmp_path):
    """configs/ablate_synthetic.yaml must stay the STFN head that `stfn demo` trains (preset small)."""
    path = Path(__file__).resolve().parents[2] / "configs" / "ablate_synthetic.yaml"
    yaml_cfg = config_to_dict(load_config(path))
    p = PRESETS["small"]
    demo = config_to_dict(head_config(base_config(p, tmp_path, tmp_path, 64, 0), p, "stfn", "sum", tmp_path))
    assert yaml_cfg["model"]["head"] == demo["model"]["head"]
    for section, keys in {
        "model": ("arch", "streams", "backbone", "flow_length", "freeze_backbone"),
        "data": ("dataset", "frames", "scale_size", "crop_size"),
        "train": ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "clip_grad", "amp", "seed"),
    }.items():
        for k in keys:
            assert yaml_cfg[section][k] == demo[section][k], f"{section}.{k}"
