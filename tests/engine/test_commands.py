"""The real chain through the CLI: synthetic tiny data -> prepare -> `stfn train` (configs/tiny.yaml)
-> `stfn eval` -> `stfn extract-features` -> `stfn train` of a head on the features -> `stfn eval`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stfn.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "tiny.yaml")


@pytest.mark.e2e
def test_train_eval_extract_and_head_training_chain(tmp_path, tiny_data, capsys) -> None:
    run = tmp_path / "run"
    data = ["--data", tiny_data["root"], "--splits", tiny_data["splits"]]
    assert main(["train", "--config", TINY, *data, "--out", str(run), "--no-progress", "--set", "train.epochs=1"]) == 0
    assert "run folder" in capsys.readouterr().out
    assert {"config.yaml", "last.pt", "best.pt", "metrics.csv", "metrics.jsonl", "tb"} <= {p.name for p in run.iterdir()}

    # --resume with only the run folder reads its config.yaml; a finished run has nothing left to do
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(["train", "--config", TINY, *data, "--out", str(run), "--no-progress"]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err

    assert main(["eval", str(run / "best.pt"), "--crops", "3", "--frames", "6", "--no-progress",
                 "--json", str(tmp_path / "eval.json")]) == 0
    text = capsys.readouterr().out
    report = json.loads((tmp_path / "eval.json").read_text())
    (result,) = report["results"]
    assert result["n"] == 16 and result["views"] == 3 and result["frames"] == 6
    assert f"{result['top1']:6.2f}" in text
    out = Path(result["out_dir"])
    assert out.parent == run and {"metrics.json", "per_class.csv", "confusion.png", "predictions.csv"} <= {
        p.name for p in out.iterdir()}

    feats = tmp_path / "feats"
    assert main(["extract-features", str(run / "best.pt"), "--out", str(feats), "--frames", "6",
                 "--no-progress"]) == 0
    meta = json.loads((feats / "features.json").read_text())
    assert np.load(feats / "train_rgb.npy").shape == (24, 6, 256)
    assert np.load(feats / "test_flow.npy").shape == (16, 6, 256)
    assert meta["subsets"]["test"]["identity"]["split"] == 1

    head = tmp_path / "head"
    assert main(["train", "--config", TINY, "--features", str(feats), "--out", str(head), "--no-progress",
                 "--set", "train.epochs=3", "--set", "data.frames=4", "--set", "model.arch=temporal_inception",
                 "--set", "model.head.blocks=1"]) == 0
    history = [json.loads(x) for x in (head / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 3 and all(np.isfinite(h["train_loss"]) for h in history)
    capsys.readouterr()
    assert main(["eval", str(head / "best.pt"), "--no-progress", "--json", "-"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["results"][0]["n"] == 16
    assert printed["results"][0]["top1"] == max(h["val_top1"] for h in history)
