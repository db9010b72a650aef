"""Tests of the result tables and the demo's ``report.md`` (``stfn.study.report``), on small hand-made
inputs."""

from __future__ import annotations

import math

import pytest

from stfn.study.report import (
    demo_markdown,
    demo_table,
    fmt_pct,
    fmt_summary,
    markdown_table,
    summarize,
    write_demo_report,
)

CLASSES = [("Square", "appearance"), ("SlideRight", "motion"), ("LeftThenRight", "temporal_order"),
           ("RightThenLeft", "temporal_order"), ("RedLeft", "appearance_motion")]

# ----------------------------------------------------------------------------- numbers and tables


def test_summarize_mean_std_range():
    s = summarize([50.0, 70.0, 90.0])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(70.0)
    assert s["std"] == pytest.approx(20.0)  # sample std (n - 1)
    assert (s["min"], s["max"]) == (50.0, 90.0)
    assert fmt_summary(s) == "70.0 ± 20.0 (50.0–90.0)"
    one = summarize([25.0])
    assert one["std"] == 0.0 and fmt_summary(one) == "25.0"
    empty = summarize([float("nan"), None])
    assert empty["n"] == 0 and fmt_summary(empty) == "–"
    assert not math.isnan(summarize([0.1, float("nan")])["mean"])


def test_fmt_pct_digits_and_missing_values():
    assert fmt_pct(87.5123) == "87.5" and fmt_pct(87.5123, 2) == "87.51" and fmt_pct(50.0, 0) == "50"
    assert fmt_pct(None) == "–" and fmt_pct(float("nan")) == "–"
    assert fmt_summary({}) == "–" and fmt_summary(summarize([1.0, 2.0]), digits=2) == "1.50 ± 0.71 (1.00–2.00)"


def test_markdown_table_shape_and_escaping():
    text = markdown_table(["model", "acc"], [["a|b", "1.0"], ["c", "2.0"]], align="lr")
    lines = text.strip().splitlines()
    assert lines[0] == "| model | acc |"
    assert lines[1] == "| --- | ---: |"
    assert lines[2] == "| a\\|b | 1.0 |"
    assert len(lines) == 4
    assert markdown_table(["x"], []) == "| x |\n| --- |\n"
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])


# ----------------------------------------------------------------------------- the demo's report.md


def _fake_summary(models: dict) -> dict:
    return {
        "command": "stfn demo --out x", "seed": 0, "time_s": 123.0, "preset": "small",
        "settings": {"frames": 8}, "backbone": "cnn_small", "fusion": "sum",
        "flow": {"algorithm": "dis", "bound": 9.0},
        "classes": [{"name": n, "group": g} for n, g in CLASSES],
        "models": models,
        "tsn_position_margins": {"rgb": {"acc": [50.0, 48.0], "margin": [0.0, -0.1]},
                                 "flow": {"acc": [52.0, 51.0], "margin": [0.1, 0.0]}},
        "timings": {"generate": 1.0, "prepare": 2.0},
        "machine": {"cpu": "Test CPU", "cores": 2, "torch": "2.x", "cuda": None},
        "test_videos": VIDEOS,
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
    text = demo_markdown(_fake_summary(models))
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
    assert "improves on TSN two-stream" not in demo_markdown(_fake_summary(models))  # no test without outcomes


def test_demo_markdown_sections_in_order():
    summary = _fake_summary({"STFN": _entry((30, 30, 10))})
    summary["machine"]["cuda"] = "Test GPU"
    text = demo_markdown(summary)
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# stfn demo report", "## Test accuracy (%) per class group",
                        "## The paper's claims, checked on this run", "## Protocol",
                        "## Leak check: TSN on single positions of the temporal-order pairs", "## Settings",
                        "## Time per step (s)", "## Machine", "## Plots"]
    assert "Total time 2.0 min on Test CPU (2 cores, torch 2.x, GPU Test GPU)." in text
    assert "Every row is one training seed." in text  # one seed per model
    assert "positions: rgb 49.0, flow 51.5 (chance 50)" in text  # mean within-pair accuracy over positions
    assert "| stream | 1 | 2 |\n| --- | ---: | ---: |\n| rgb | 50 | 48 |\n| flow | 52 | 51 |\n" in text
    assert "| STFN | p | - | - | - | `r` |" in text  # no history: no loss columns
    assert "| flow | dis, bound 9 |" in text and "| backbone | cnn_small |" in text
    assert ("Classes per group: appearance (1): Square; motion (1): SlideRight; temporal_order (2): "
            "LeftThenRight, RightThenLeft; appearance_motion (1): RedLeft.") in text
    assert "| prepare | 2.0 |" in text and "| cores | 2 |" in text
    summary["tsn_position_margins"] = {}
    assert "Leak check" not in demo_markdown(summary)


def test_write_demo_report_writes_the_markdown_and_plots(tmp_path):
    models = {"TSN two-stream": _entry((20, 20, 15)), "STFN": _entry((24, 39, 18))}
    models["STFN"]["confusion"] = [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0],
                                   [0, 0, 0, 0, 1]]
    summary = _fake_summary(models)
    hist = [{"epoch": 1, "train_loss": 1.0, "val_top1": 50.0}]
    write_demo_report(tmp_path, summary, {"STFN": hist})
    assert sorted(f.name for f in tmp_path.iterdir()) == ["confusion_stfn.png", "curves.png", "groups.png",
                                                          "report.md"]
    assert (tmp_path / "report.md").read_text() == demo_markdown(summary)
    for name in ("confusion_stfn.png", "curves.png", "groups.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    # no STFN confusion matrix: no confusion plot
    del models["STFN"]["confusion"]
    out = tmp_path / "again"
    out.mkdir()
    write_demo_report(out, summary, {})
    assert sorted(f.name for f in out.iterdir()) == ["curves.png", "groups.png", "report.md"]


def test_protocol_table_says_how_far_the_training_loss_still_fell():
    entry = _entry((30, 30, 10))
    entry["history"] = [{"epoch": e + 1, "train_loss": loss} for e, loss in enumerate([2.0, 1.5, 1.2, 1.1, 1.0, 0.9,
                                                                                      0.8, 0.6])]
    text = demo_markdown(_fake_summary({"STFN": entry}))
    # last quarter of 8 epochs = 2 epochs: 0.9 (epoch 6) -> 0.6 (epoch 8) is a fall of 33%
    assert "| STFN | p | 8 | 0.600 | 33% (epochs 6-8) | `r` |" in text
