"""Tests of ``stfn demo`` (``stfn.study.demo``): a reduced demo end to end (its TSN two-stream scores
equal the late fusion of the two TSN evaluations), and the refusal to resume another run's folder."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from stfn.cli import main
from stfn.engine.checkpoint import load_checkpoint
from stfn.engine.evaluate import evaluate_checkpoint, fuse_predictions
from stfn.errors import StfnError
from stfn.study.demo import run_demo
from stfn.study.presets import E2E_MODEL, MODELS, PRESETS

# ----------------------------------------------------------------------------- the tiny demo, end to end


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`stfn demo --preset tiny --end-to-end`, run once: every step runs for real (generation, decoding,
    DIS flow, training, features, heads)."""
    out = tmp_path_factory.mktemp("demo")
    threads = torch.get_num_threads()
    try:
        code = main(["demo", "--preset", "tiny", "--out", str(out), "--end-to-end", "--threads", "1",
                     "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out


@pytest.mark.e2e
def test_tiny_demo_results(tiny_demo):
    """results.json holds every model, scored on every test video, with the documented fields."""
    for name in ("results.json", "report.md", "curves.png", "groups.png", "confusion_stfn.png"):
        assert (tiny_demo / name).is_file(), name
    res = json.loads((tiny_demo / "results.json").read_text())
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
    # the heads train with 2 seeds (tiny preset): per-seed runs, mean, and per-video outcomes for the claims
    stfn = res["models"]["STFN"]
    assert stfn["seeds"] == [0, 1] and len(stfn["per_seed"]) == 2 and len(stfn["outcomes"]) == 2
    assert [Path(r).name for r in stfn["runs"]] == ["stfn", "stfn_seed1"]
    overall = [m["overall"] for m in stfn["per_seed"]]
    assert stfn["metrics"]["overall"] == pytest.approx(sum(overall) / 2)
    for o in stfn["outcomes"]:
        assert len(o["hit"]) == len(res["test_videos"]) == 16
    assert res["models"]["TSN RGB"]["seeds"] == [0]


@pytest.mark.e2e
def test_tiny_demo_report(tiny_demo):
    """report.md's table has the documented structure: one row per model, spread only for several seeds."""
    res = json.loads((tiny_demo / "results.json").read_text())
    report = (tiny_demo / "report.md").read_text()
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
    assert "±" not in rows[0]  # TSN RGB: one seed
    assert "McNemar" in report
    assert "two-stage protocol" in report and "Machine" in report


@pytest.mark.e2e
def test_tiny_demo_two_stream_checkpoint(tiny_demo):
    """The two-stream TSN checkpoint holds both single-stream networks, unchanged, and its forward (TSN
    late fusion 1:1.5) is what the demo computed from the two evaluations."""
    runs = tiny_demo / "runs"
    two = load_checkpoint(runs / "tsn_two_stream" / "last.pt")["model"]
    rgb = load_checkpoint(runs / "tsn_rgb" / "last.pt")["model"]
    flow = load_checkpoint(runs / "tsn_flow" / "last.pt")["model"]
    for part in (rgb, flow):
        for k, v in part.items():
            assert torch.equal(two[k], v), k
    assert set(two) == set(rgb) | set(flow)

    fused = fuse_predictions({s: json.loads((runs / f"tsn_{s}" / "predictions_last.json").read_text())
                              for s in ("rgb", "flow")}, [1.0, 1.5])
    direct = evaluate_checkpoint(runs / "tsn_two_stream" / "last.pt", progress=False).predictions
    assert [p["video"] for p in fused] == [p["video"] for p in direct]
    for a, b in zip(fused, direct, strict=True):
        assert torch.allclose(torch.tensor(a["scores"]), torch.tensor(b["scores"]), atol=1e-4)


def test_demo_refuses_a_folder_of_another_run(tmp_path):
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
