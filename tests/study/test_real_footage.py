"""Real camera footage (``../shared/realdata``, see its SOURCES.md): a few Weizmann clips prepared and
trained one epoch, `stfn predict` on every real UCF101 / HMDB51 clip, and (slow) the README's
`stfn compare` run on the Weizmann actor split."""

from __future__ import annotations

import json
import shutil

import pytest

from stfn.cli import main
from stfn.config import config_from_dict
from stfn.data.prepare.run import prepare_dataset
from stfn.engine.evaluate import evaluate_checkpoint
from stfn.engine.train import train
from suite_helpers import REALDATA, save_tiny_checkpoint

WEIZMANN = REALDATA / "weizmann"
CLIPS = REALDATA / "clips"
needs_real = pytest.mark.shared("realdata/weizmann/splits/trainlist01.txt", "realdata/clips")


def _tiny(root, splits) -> object:
    return config_from_dict({
        "name": "weizmann-tiny",
        "model": {"arch": "stfn", "backbone": "cnn_small", "pretrained": False, "flow_length": 2,
                  "head": {"hidden_dim": 16, "blocks": 1}},
        "data": {"dataset": "ucf101", "root": str(root), "splits": str(splits), "frames": 4, "scale_size": 32,
                 "crop_size": 32, "test_crops": 1, "num_workers": 0},
        "train": {"epochs": 1, "batch_size": 4, "optimizer": "adamw", "lr": 1e-3, "amp": "none",
                  "channels_last": False},
    })


@pytest.mark.e2e  # process pool, DIS flow, training: about 5-10 s
@needs_real
def test_a_few_weizmann_clips_prepare_and_train_one_epoch(tmp_path) -> None:
    classes = ["Bend", "JumpingJack"]
    videos, splits = tmp_path / "videos", tmp_path / "splits"
    splits.mkdir()
    train_lines, test_lines = [], []
    for label, cls in enumerate(classes, 1):
        for actor in (1, 7):  # actor 1 trains, actor 7 tests: leave actors out
            name = f"{cls}/v_{cls}_g{actor:02d}_c01.mp4"
            (videos / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(WEIZMANN / "videos" / name, videos / name)
            (test_lines.append(name) if actor == 7 else train_lines.append(f"{name} {label}"))
    (splits / "classInd.txt").write_text("".join(f"{i} {c}\r\n" for i, c in enumerate(classes, 1)))
    (splits / "trainlist01.txt").write_text("".join(x + "\r\n" for x in train_lines))
    (splits / "testlist01.txt").write_text("".join(x + "\r\n" for x in test_lines))
    summary = prepare_dataset(videos, tmp_path / "prepared", workers=1, short_side=32, progress=False)
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert len(manifest["videos"]) == 4 and all(v["status"] == "ok" for v in manifest["videos"].values())
    assert all(v["frames"] >= 51 and v["width"] == v["height"] == 32 for v in manifest["videos"].values())
    assert summary is not None
    result = train(_tiny(tmp_path / "prepared", splits), tmp_path / "run", progress=False)
    assert len(result.history) == 1 and result.last["n"] == 2
    assert evaluate_checkpoint(tmp_path / "run" / "last.pt", progress=False).n == 2


@needs_real
def test_predict_runs_on_every_real_clip(tmp_path, capsys) -> None:
    clips = sorted(p for p in CLIPS.iterdir() if p.suffix in (".mp4", ".avi"))
    assert len(clips) == 8
    cfg = _tiny("", "")
    cfg.model.num_classes = 3
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.pt", cfg, ["drink", "jump", "swing"])
    assert main(["predict", str(ckpt), str(CLIPS), "--json", "--top-k", "2", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["failed"] == 0 and sorted(r["video"] for r in doc["results"]) == sorted(map(str, clips))
    for r in doc["results"]:
        assert r["ok"] and r["frames"] >= 40 and len(r["top"]) == 2, r["video"]
        assert r["timings"]["flow"] > 0  # flow computed on the fly from real footage


@pytest.mark.slow
@needs_real
def test_compare_on_the_weizmann_actor_split(tmp_path) -> None:
    """The README's real-footage run: `stfn compare` on Weizmann (actors 1-6 train, 7-9 test), preset quick."""
    out = tmp_path / "cmp"
    assert main(["compare", str(WEIZMANN / "videos"), "--splits", str(WEIZMANN / "splits"), "--out", str(out),
                 "--preset", "quick", "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["train_videos"] == 48 and len(res["test_videos"]) == 24 and res["shared_groups"] == []
    assert {"STFN", "TS-LSTM", "TSN two-stream"} <= set(res["models"])
    for entry in res["models"].values():
        assert sum(entry["counts"].values()) == 24 and 0.0 <= entry["metrics"]["overall"] <= 100.0
    assert "## Claims, checked on this run" in (out / "report.md").read_text()
