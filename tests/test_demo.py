"""Tests of ``stfn demo`` (a reduced demo end to end) and of the per-group metrics, report and plots
in ``stfn.report`` that it writes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from stfn.errors import StfnError
from stfn.report import (
    class_groups,
    demo_markdown,
    demo_table,
    group_accuracy,
    load_classes_meta,
    plot_confusion,
    plot_group_accuracy,
    plot_training_curves,
    temporal_pairs,
)

META = {
    "flow_bound": 9.0,
    "classes": [
        {"name": "Square", "group": "appearance"},
        {"name": "SlideRight", "group": "motion", "twin": "SlideLeft"},
        {"name": "SlideLeft", "group": "motion", "twin": "SlideRight"},
        {"name": "LeftThenRight", "group": "temporal_order", "twin": "RightThenLeft"},
        {"name": "RightThenLeft", "group": "temporal_order", "twin": "LeftThenRight"},
        {"name": "RedLeft", "group": "appearance_motion", "twin": "GreenLeft"},
        {"name": "GreenLeft", "group": "appearance_motion", "twin": "RedLeft"},
    ],
}
CLASSES = [c["name"] for c in META["classes"]]


def _pred(label: int, scores: list[float]) -> dict:
    return {"video": f"v{label}", "label": label, "scores": scores}


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


# ----------------------------------------------------------------------------- groups and pairs


def test_class_groups_and_pairs_follow_label_order():
    order = list(reversed(CLASSES))  # the dataset's label order need not be classes.json's
    groups = class_groups(META, order + ["Unknown"])
    assert groups[0] == "appearance_motion" and groups[-2] == "appearance" and groups[-1] == "other"
    pairs = temporal_pairs(META, order)
    i, j = order.index("LeftThenRight"), order.index("RightThenLeft")
    assert pairs == {i: j, j: i}  # only the temporal-order twins


def test_temporal_pairs_without_twin_keys_pair_in_listed_order():
    meta = {"classes": [{"name": n, "group": "temporal_order"} for n in "ABCD"]}
    assert temporal_pairs(meta, list("ABCD")) == {0: 1, 1: 0, 2: 3, 3: 2}


def test_group_accuracy_hand_computed():
    groups = class_groups(META, CLASSES)
    pairs = temporal_pairs(META, CLASSES)
    k = len(CLASSES)

    def onehot(c, partner=None, second=None):
        s = [0.0] * k
        s[c] = 1.0
        if partner is not None:
            s[partner] = second
        return s

    preds = [
        _pred(0, onehot(0)),  # appearance right
        _pred(0, onehot(1)),  # appearance wrong
        _pred(1, onehot(1)),  # motion right
        # temporal order: top-1 wrong (class 0 wins) but the true class beats its partner
        _pred(3, onehot(0, partner=3, second=0.5)),
        # temporal order: partner beats the true class
        _pred(4, onehot(3)),
        _pred(5, onehot(6)),  # appearance+motion wrong
    ]
    acc = group_accuracy(preds, groups, pairs)
    assert acc["appearance"] == pytest.approx(50.0)
    assert acc["motion"] == pytest.approx(100.0)
    assert acc["temporal_order"] == pytest.approx(0.0)
    assert acc["temporal_order_pair"] == pytest.approx(50.0)
    assert acc["appearance_motion"] == pytest.approx(0.0)
    assert acc["overall"] == pytest.approx(100.0 * 2 / 6)
    # classes 0, 1, 3, 4, 5 have videos: per-class 50, 100, 0, 0, 0
    assert acc["mean_class_acc"] == pytest.approx(30.0)
    assert acc["counts"] == {"appearance": 2, "motion": 1, "temporal_order": 2, "appearance_motion": 1}


def test_load_classes_meta_errors_name_the_file(tmp_path):
    with pytest.raises(StfnError, match="does not exist"):
        load_classes_meta(tmp_path / "classes.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(StfnError, match="bad.json"):
        load_classes_meta(bad)
    bad.write_text(json.dumps({"classes": [{"name": "x"}]}))
    with pytest.raises(StfnError, match="entry 0"):
        load_classes_meta(bad)


# ----------------------------------------------------------------------------- report and plots


def _fake_summary(models: dict) -> dict:
    return {
        "command": "stfn demo --out x", "seed": 0, "time_s": 123.0, "preset": "small",
        "settings": {"frames": 8}, "backbone": "cnn_small", "fusion": "sum",
        "flow": {"algorithm": "dis", "bound": 9.0},
        "classes": [{"name": c["name"], "group": c["group"]} for c in META["classes"]],
        "models": models,
        "tsn_position_margins": {"rgb": {"acc": [50.0, 48.0], "margin": [0.0, -0.1]},
                                 "flow": {"acc": [52.0, 51.0], "margin": [0.1, 0.0]}},
        "timings": {"generate": 1.0, "prepare": 2.0},
        "machine": {"cpu": "Test CPU", "cores": 2, "torch": "2.x", "cuda": None},
    }


VIDEOS = [{"video": f"v{i:03d}", "label": 0, "group": g}
          for i, g in enumerate(["appearance_motion"] * 40 + ["temporal_order"] * 40 + ["motion"] * 20)]


def _outcomes(right_am: int, right_pair: int, right_other: int) -> dict:
    """Per-video outcome strings for VIDEOS: the first ``right_*`` videos of each part are right."""
    hit = "1" * right_am + "0" * (40 - right_am) + "1" * right_pair + "0" * (40 - right_pair)
    hit += "1" * right_other + "0" * (20 - right_other)
    pair = "-" * 40 + "1" * right_pair + "0" * (40 - right_pair) + "-" * 20
    return {"hit": hit, "pair_hit": pair}


def _entry(*seeds: tuple[int, int, int]) -> dict:
    """A model entry from (right among 40 binding videos, among 40 order videos, among 20 others) per seed."""
    per_seed = [{"overall": (a + p + o) / 1.0, "temporal_order_pair": p * 2.5, "appearance_motion": a * 2.5,
                 "appearance": 90.0} for a, p, o in seeds]
    mean = {k: sum(m[k] for m in per_seed) / len(per_seed) for k in per_seed[0]}
    return {"protocol": "p", "run": "r", "seeds": list(range(len(seeds))), "metrics": mean,
            "metrics_std": {k: 1.0 for k in mean}, "outcomes": [_outcomes(*s) for s in seeds]}


def test_demo_markdown_reports_claims_honestly():
    models = {
        "TSN two-stream": _entry((20, 20, 15)),
        "Temporal-Inception": _entry((30, 38, 18), (30, 38, 18)),
        "STFN (no fusion)": _entry((36, 39, 18), (35, 39, 18)),
        "STFN": _entry((24, 39, 18), (22, 39, 18)),
    }
    summary = _fake_summary(models)
    summary["test_videos"] = VIDEOS
    text = demo_markdown(summary)
    assert "| STFN | 90.0 ± 1.0 | – | – | 97.5 ± 1.0 | 57.5 ± 1.0 | 80.0 ± 1.0 |" in text
    assert "| TSN two-stream | 90.0 | – | – | 50.0 | 50.0 | 55.0 |" in text  # one seed: no spread
    # STFN beats TSN on order pairs (19 discordant videos per seed, all one way, paired with TSN's one seed)
    assert ("STFN 97.5 vs TSN two-stream 50.0 (temporal order pair) — holds (right only by STFN: 38, "
            "only by TSN two-stream: 0, z = +6.2; difference per seed +47.5, +47.5)") in text
    # ... but loses to no-fusion on appearance+motion, said plainly
    assert "STFN 57.5 vs STFN (no fusion) 88.8 (appearance motion) — does **not** hold (the opposite does)" in text
    # the mean difference of 6 points is 2 discordant videos one way and 14 the other: z = -3
    assert ("STFN 80.0 vs Temporal-Inception 86.0 (overall) — does **not** hold (the opposite does) "
            "(right only by STFN: 2, only by Temporal-Inception: 14, z = -3.0") in text
    assert "McNemar" in text and "2 seeds" in text
    assert "two-stage protocol" in text and "--end-to-end" in text
    assert "Test CPU" in text and "2 cores" in text
    table = demo_table(models)
    assert table.count("\n") == 2 + len(models)


def test_claims_need_per_video_outcomes():
    models = {"STFN": _entry((30, 30, 10)), "TSN two-stream": _entry((30, 30, 10))}
    del models["TSN two-stream"]["outcomes"]
    summary = _fake_summary(models)
    summary["test_videos"] = VIDEOS
    assert "improves on TSN two-stream" not in demo_markdown(summary)  # no test without outcomes


def test_test_curve_is_never_filled_in_with_training_accuracy():
    from stfn.report import _TEST_KEYS, _TRAIN_KEYS, curve_points

    hist = [{"epoch": e, "train_top1": 90.0 + e} for e in (1, 2, 3)]
    hist[1]["val_top1"] = 70.0  # evaluated at epoch 2 only
    assert curve_points(hist, _TEST_KEYS) == [(2, 70.0)]
    assert curve_points(hist, _TRAIN_KEYS) == [(1, 91.0), (2, 92.0), (3, 93.0)]


def test_plots_write_pngs(tmp_path):
    hist = [{"epoch": e, "train_loss": 2.0 / e, "val_top1": 10.0 * e} for e in (1, 2, 3)]
    p = plot_training_curves({"TSN RGB": hist, "STFN": hist[:2], "empty": []}, tmp_path / "curves.png")
    assert _png_size(p)[0] > 100
    res = {"STFN": {"appearance": 90.0, "overall": 80.0, "temporal_order_pair": None}, "TSN": {"overall": 50.0}}
    assert _png_size(plot_group_accuracy(res, tmp_path / "groups.png"))[0] > 100
    cm = [[5, 1], [0, 6]]
    assert _png_size(plot_confusion(cm, ["a", "b"], tmp_path / "cm.png", title="t"))[0] > 100
    with pytest.raises(ValueError, match="2x2"):
        plot_confusion([[1, 2, 3]], ["a", "b"], tmp_path / "bad.png")


# ----------------------------------------------------------------------------- the tiny demo, end to end


def test_tiny_demo_end_to_end(tmp_path):
    """`stfn demo --preset tiny --end-to-end`: every step runs for real (generation, decoding, DIS flow,
    training, features, heads); the report files exist and the table has the documented structure."""
    import torch

    from stfn.cli import main
    from stfn.demo import E2E_MODEL, MODELS

    threads = torch.get_num_threads()
    try:
        code = main(["demo", "--preset", "tiny", "--out", str(tmp_path), "--end-to-end", "--threads", "1",
                     "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    for name in ("results.json", "report.md", "curves.png", "groups.png", "confusion_stfn.png"):
        assert (tmp_path / name).is_file(), name
    res = json.loads((tmp_path / "results.json").read_text())
    assert list(res["models"]) == [*MODELS, E2E_MODEL]
    tiny_classes = 8  # the generator's tiny preset: 2 classes per group
    assert len(res["classes"]) == tiny_classes
    assert {c["group"] for c in res["classes"]} == {"appearance", "motion", "temporal_order", "appearance_motion"}
    assert len(res["pairs"]) == 2  # the temporal-order pair, both ways
    for name, entry in res["models"].items():
        m = entry["metrics"]
        for key in ("appearance", "motion", "temporal_order", "temporal_order_pair", "appearance_motion", "overall"):
            assert m[key] is not None and 0.0 <= m[key] <= 100.0, (name, key)
        assert sum(entry["counts"].values()) == 16  # every test video scored once
        assert len(entry["confusion"]) == tiny_classes
        assert sum(map(sum, entry["confusion"])) == 16
    assert len(res["models"]["STFN"]["history"]) == 2  # head epochs of the tiny preset
    assert res["models"]["TSN RGB"]["protocol"].startswith("end to end")
    assert res["models"]["STFN"]["protocol"].startswith("two-stage")
    margins = res["tsn_position_margins"]
    assert set(margins) == {"rgb", "flow"} and len(margins["rgb"]["acc"]) == res["settings"]["feature_frames"]
    assert res["machine"]["cores"] >= 1 and res["time_s"] > 0
    assert set(res["timings"]) >= {"generate", "prepare", "backbones", "features", "heads"}

    report = (tmp_path / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    header = table[0]
    assert header == ("| model | appearance | motion | temporal order | order, within pair (chance 50) | "
                      "appearance+motion | overall |")
    rows = table[2 : 2 + len(res["models"])]
    assert [r.split(" | ")[0][2:] for r in rows] == list(res["models"])
    assert all(len(r.split(" | ")) == 7 for r in rows)
    stfn = res["models"]["STFN"]
    stfn_row = rows[list(res["models"]).index("STFN")]
    assert stfn_row.endswith(f"| {stfn['metrics']['overall']:.1f} ± {stfn['metrics_std']['overall']:.1f} |")
    # the heads train with 2 seeds (tiny preset): per-seed runs, mean, and per-video outcomes for the claims
    assert stfn["seeds"] == [0, 1] and len(stfn["per_seed"]) == 2 and len(stfn["outcomes"]) == 2
    assert [Path(r).name for r in stfn["runs"]] == ["stfn", "stfn_seed1"]
    overall = [m["overall"] for m in stfn["per_seed"]]
    assert stfn["metrics"]["overall"] == pytest.approx(sum(overall) / 2)
    for o in stfn["outcomes"]:
        assert len(o["hit"]) == len(res["test_videos"]) == 16
    assert res["models"]["TSN RGB"]["seeds"] == [0] and "±" not in rows[0]
    assert "McNemar" in report
    assert "two-stage protocol" in report and "Machine" in report

    # the two-stream TSN checkpoint holds both single-stream networks, unchanged
    from stfn.engine.checkpoint import load_checkpoint

    two = load_checkpoint(tmp_path / "runs" / "tsn_two_stream" / "last.pt")["model"]
    rgb = load_checkpoint(tmp_path / "runs" / "tsn_rgb" / "last.pt")["model"]
    flow = load_checkpoint(tmp_path / "runs" / "tsn_flow" / "last.pt")["model"]
    for part in (rgb, flow):
        for k, v in part.items():
            assert torch.equal(two[k], v), k
    assert set(two) == set(rgb) | set(flow)

    # and its forward (TSN late fusion 1:1.5) is what the demo computed from the two evaluations
    from stfn.demo import fuse_predictions
    from stfn.engine.evaluate import evaluate_checkpoint

    runs = tmp_path / "runs"
    fused = fuse_predictions(json.loads((runs / "tsn_rgb" / "predictions_last.json").read_text()),
                             json.loads((runs / "tsn_flow" / "predictions_last.json").read_text()))
    direct = evaluate_checkpoint(runs / "tsn_two_stream" / "last.pt", progress=False)["predictions"]
    assert [p["video"] for p in fused] == [p["video"] for p in direct]
    for a, b in zip(fused, direct, strict=True):
        assert torch.allclose(torch.tensor(a["scores"]), torch.tensor(b["scores"]), atol=1e-4)


def test_demo_refuses_a_folder_of_another_run(tmp_path):
    from dataclasses import asdict

    from stfn.demo import PRESETS, run_demo

    record = tmp_path / "demo.json"
    record.write_text(json.dumps({"preset": "tiny", "settings": {}, "seed": 1}))
    with pytest.raises(StfnError, match="other settings .*seed 1 there, 0 now"):
        run_demo(tmp_path, preset="tiny", seed=0, log=lambda s: None)
    # a changed preset setting (e.g. after an upgrade) is named, not called "another seed"
    record.write_text(json.dumps({"preset": "tiny", "settings": {**asdict(PRESETS["tiny"]), "head_seeds": 1},
                                  "seed": 0}))
    with pytest.raises(StfnError, match=r"\(head_seeds 1 there, 2 now\); choose another --out"):
        run_demo(tmp_path, preset="tiny", seed=0, log=lambda s: None)
    record.write_text("{not json")
    with pytest.raises(StfnError, match="demo.json' is not a readable demo record"):
        run_demo(tmp_path, preset="tiny", seed=0, log=lambda s: None)
    assert not (tmp_path / "data").exists() and record.read_text() == "{not json"  # nothing overwritten
    with pytest.raises(StfnError, match="unknown demo preset 'huge'"):
        run_demo(tmp_path / "x", preset="huge", log=lambda s: None)
