"""A checkpoint's data identity: evaluation where the data is now (``--data`` / ``--splits``), a
different data set refused with the list that differs, leak checks that see what the checkpoints it
was initialised from trained on, no resume on other data, no training on a split that leaks."""

from __future__ import annotations

import json
import shutil

import pytest

from dataset_helpers import tiny_run_config, write_tiny_prepared, write_tiny_splits
from stfn.cli import main
from stfn.engine.checkpoint import CheckpointError, inheritance, load_checkpoint
from stfn.engine.evaluate import evaluate_checkpoint
from stfn.engine.features import extract_features
from stfn.engine.train import train
from stfn.errors import StfnError


@pytest.fixture
def tiny(tmp_path):
    root = write_tiny_prepared(tmp_path / "prepared")
    splits = write_tiny_splits(tmp_path / "splits")
    return root, splits


def test_eval_and_extract_where_the_data_is_now(tmp_path, tiny, capsys) -> None:
    root, splits = tiny
    run = tmp_path / "run"
    train(tiny_run_config(root, splits), run, progress=False)
    before = evaluate_checkpoint(run / "last.pt", progress=False)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(root, moved / "prepared")
    shutil.move(splits, moved / "splits")
    assert main(["eval", str(run / "last.pt"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", str(run / "last.pt"), "--data", str(moved / "prepared"), "--splits", str(moved / "splits"),
                 "--no-progress", "--json", str(tmp_path / "eval.json")]) == 0
    (result,) = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert result["n"] == before.n == 4 and result["top1"] == pytest.approx(before.top1)
    feats = tmp_path / "feats"
    assert main(["extract-features", str(run / "last.pt"), "--out", str(feats), "--data", str(moved / "prepared"),
                 "--splits", str(moved / "splits"), "--no-progress"]) == 0
    meta = json.loads((feats / "features.json").read_text())
    assert meta["subsets"]["test"]["identity"]["split"] == 1
    assert meta["source_videos"] == sorted(load_checkpoint(run / "last.pt")["train_videos"])


def test_a_head_on_moved_features_is_evaluated_with_features(tmp_path, tiny, capsys) -> None:
    root, splits = tiny
    head = tiny_run_config(root, splits, arch="tsn")
    head.model.freeze_backbone = True
    feats = extract_features(head, tmp_path / "feats", progress=False)  # fresh backbones: plumbing only
    head.data.features = str(feats)
    train(head, tmp_path / "head", progress=False)
    shutil.move(feats, tmp_path / "moved")
    assert main(["eval", str(tmp_path / "head" / "last.pt"), "--data", str(root), "--no-progress"]) == 2
    assert "was trained on cached features" in capsys.readouterr().err
    r = evaluate_checkpoint(tmp_path / "head" / "last.pt", features_dir=tmp_path / "moved", progress=False)
    assert r.n == 4


def test_another_data_set_is_refused_naming_the_list(tmp_path, tiny, capsys) -> None:
    root, splits = tiny
    run = tmp_path / "run"
    train(tiny_run_config(root, splits), run, progress=False)
    other = write_tiny_splits(tmp_path / "other")
    lines = (other / "trainlist01.txt").read_text().splitlines(keepends=True)
    (other / "trainlist01.txt").write_text("".join(lines[1:]))  # one training video fewer
    with pytest.raises(CheckpointError, match=r"was trained on another data set: the training list of split 1 "
                                              r"of '.*other' differs from the one it was trained with"):
        evaluate_checkpoint(run / "last.pt", splits_dir=other, progress=False)
    # another split of that folder: the checkpoint's own split there is compared (and refused)
    with pytest.raises(CheckpointError, match="the training list of split 1"):
        evaluate_checkpoint(run / "last.pt", splits_dir=other, split=2, progress=False)
    with pytest.raises(CheckpointError, match="training list"):
        extract_features(run / "last.pt", tmp_path / "feats", splits_dir=other, progress=False)
    tests = (other / "testlist01.txt").read_text().splitlines(keepends=True)
    (other / "trainlist01.txt").write_text("".join(lines))
    (other / "testlist01.txt").write_text("".join(tests[1:]))
    assert main(["eval", str(run / "last.pt"), "--splits", str(other), "--no-progress"]) == 2
    assert "the test list of split 1" in capsys.readouterr().err


def test_split_numbers_are_split_and_the_old_spelling_is_named(tmp_path, tiny, capsys) -> None:
    root, splits = tiny
    run = tmp_path / "run"
    train(tiny_run_config(root, splits), run, progress=False)
    assert main(["eval", str(run / "last.pt"), "--splits", "1", "--no-progress"]) == 2
    assert "--splits is the split folder now; give split numbers with --split 1" in capsys.readouterr().err
    assert main(["eval", str(run / "last.pt"), str(run / "last.pt"), "--split", "1", "2", "3"]) == 2
    assert "--split lists 3 splits for 2 checkpoints" in capsys.readouterr().err
    assert main(["eval", str(run / "last.pt"), "--split", "2", "--no-progress"]) == 2
    assert "was trained on 4 of the 4 test videos of split 2" in capsys.readouterr().err


def test_initialisation_from_another_split_is_a_leak(tmp_path, tiny) -> None:
    root, splits = tiny
    train(tiny_run_config(root, splits, split=1), tmp_path / "s1", progress=False)
    cfg = tiny_run_config(root, splits, split=2)
    cfg.train.init_rgb = cfg.train.init_flow = str(tmp_path / "s1" / "last.pt")
    train(cfg, tmp_path / "s2", progress=False)
    ckpt = load_checkpoint(tmp_path / "s2" / "last.pt")
    assert ckpt["inherited"]["sources"] == [str(tmp_path / "s1" / "last.pt")]
    assert "Jump/v_Jump_g02_c01" in ckpt["inherited"]["videos"]  # split 1 trains on group 2
    with pytest.raises(StfnError, match=r"was initialised from '.*s1/last.pt', which trained on 4 of the 4 "
                                        r"test videos of split 2"):
        evaluate_checkpoint(tmp_path / "s2" / "last.pt", progress=False)
    # cached features: the source checkpoint's videos are recorded and inherited by a head trained on them
    feats = extract_features(tmp_path / "s1" / "last.pt", tmp_path / "feats", progress=False)
    head = tiny_run_config(root, splits)
    head.data.features = str(feats)
    assert set(inheritance(head)["videos"]) == set(load_checkpoint(tmp_path / "s1" / "last.pt")["train_videos"])
    # and a split-1 backbone cannot extract split 2's test features: it trained on them
    with pytest.raises(StfnError, match="trained on 4 of the 4 test videos of split 2"):
        extract_features(tmp_path / "s1" / "last.pt", tmp_path / "feats2", split=2, progress=False)


def test_resume_on_other_data_is_refused(tmp_path, tiny) -> None:
    root, splits = tiny
    cfg = tiny_run_config(root, splits, epochs=2)
    cfg.train.epochs = 1
    train(cfg, tmp_path / "run", progress=False)
    cfg.train.epochs = 2
    cfg.data.split = 2
    with pytest.raises(CheckpointError, match=r"cannot resume '.*last.pt' on split 2: the run trained on split 1"):
        train(cfg, tmp_path / "run", resume=True, progress=False)
    other = write_tiny_splits(tmp_path / "other")
    lines = (other / "trainlist01.txt").read_text().splitlines(keepends=True)
    (other / "trainlist01.txt").write_text("".join(lines[1:]))
    cfg.data.split, cfg.data.splits = 1, str(other)
    with pytest.raises(CheckpointError, match="cannot resume .* on another data set: its training list differs"):
        train(cfg, tmp_path / "run", resume=True, progress=False)


def test_a_split_whose_training_list_holds_test_videos_is_refused(tmp_path) -> None:
    root = write_tiny_prepared(tmp_path / "prepared")
    leaky = write_tiny_splits(tmp_path / "leaky", leak=2)
    cfg = tiny_run_config(root, leaky)
    with pytest.raises(StfnError, match=r"split 1 of '.*leaky' lists 2 of its 4 test videos in its training list "
                                        r"too \(e\.g\. 'Jump/v_Jump_g01_c01'\)"):
        train(cfg, tmp_path / "run", progress=False)
    cfg.train.eval_every = 0  # without evaluation during training the lists are still checked
    with pytest.raises(StfnError, match="lists 2 of its 4 test videos"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()
