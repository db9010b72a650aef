"""Bad split folders and outputs given to `stfn compare` and `stfn train` (issue 28, case 2): a class with
no videos, a video listed twice, an empty class folder, an output path that is a file. Each is one
sentence, before any work, and nothing already there is touched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dataset_helpers import write_tiny_prepared, write_tiny_splits
from stfn.cli import main

from .command_helpers import one_sentence

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    return write_tiny_prepared(tmp_path / "prepared"), write_tiny_splits(tmp_path / "splits")


def _variant(splits: Path, to: Path, edit) -> Path:
    shutil.copytree(splits, to)
    edit(to)
    return to


def _extra_class(folder: Path) -> None:
    with open(folder / "classInd.txt", "a") as f:
        f.write("3 Ghost\r\n")


def _listed_twice(folder: Path) -> None:
    lines = (folder / "trainlist01.txt").read_text().splitlines(keepends=True)
    (folder / "trainlist01.txt").write_text("".join(lines + lines[:1]))


def _compare(root: Path, splits: Path, out: Path, *extra: str) -> list[str]:
    return [str(root), "--splits", str(splits), "--out", str(out), "--preset", "tiny", "--no-progress",
            "--threads", "1", *extra]


def _train(root: Path, splits: Path, out: Path) -> list[str]:
    return ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data", str(root), "--splits", str(splits),
            "--set", "data.dataset=ucf101", "--out", str(out), "--no-progress", "--set", "train.epochs=1",
            "--set", "train.eval_every=0"]


def test_compare_refuses_each_in_one_sentence_before_any_work(tmp_path, tiny, capsys) -> None:
    root, splits = tiny
    extra = _variant(splits, tmp_path / "extra", _extra_class)
    one_sentence(capsys, "compare", _compare(root, extra, tmp_path / "a"),
                 "class 'Ghost' of the class list of split 1 has no video in its train list (1 such class(es)): "
                 "a comparison cannot learn it")
    twice = _variant(splits, tmp_path / "twice", _listed_twice)
    one_sentence(capsys, "compare", _compare(root, twice, tmp_path / "b"),
                 f"{twice / 'trainlist01.txt'}, line 9: video 'Jump/v_Jump_g02_c01' is already listed on line 1")
    tree = tmp_path / "tree"  # --dataset folder: train/<class>/ and test/<class>/, one class folder empty
    for key in ("train/Jump/a.mp4", "train/Wave/b.mp4", "test/Jump/c.mp4", "test/Wave/d.mp4"):
        (tree / key).parent.mkdir(parents=True, exist_ok=True)
        (tree / key).write_bytes(b"")
    (tree / "train" / "Ghost").mkdir()
    one_sentence(capsys, "compare", _compare(root, tree, tmp_path / "c", "--dataset", "folder"),
                 f"class folder '{tree / 'train' / 'Ghost'}' holds no videos: add its videos or remove the folder")
    a_file = tmp_path / "results"
    a_file.write_text("keep me")
    one_sentence(capsys, "compare", _compare(root, splits, a_file), f"'{a_file}' is a file, not a folder")
    assert a_file.read_text() == "keep me"
    assert not any((tmp_path / n).exists() for n in ("a", "b", "c"))  # refused before any output


def test_train_names_each_in_one_sentence(tmp_path, tiny, capsys) -> None:
    root, splits = tiny
    twice = _variant(splits, tmp_path / "twice", _listed_twice)
    one_sentence(capsys, "train", _train(root, twice, tmp_path / "b")[1:],
                 f"{twice / 'trainlist01.txt'}, line 9: video 'Jump/v_Jump_g02_c01' is already listed on line 1")
    a_file = tmp_path / "run"
    a_file.write_text("keep me")
    one_sentence(capsys, "train", _train(root, splits, a_file)[1:], f"run folder '{a_file}' is a file, not a folder")
    assert a_file.read_text() == "keep me" and not (tmp_path / "b").exists()
    # a class listed with no video trains (its output is never learnt), and says so in one warning
    extra = _variant(splits, tmp_path / "extra", _extra_class)
    assert main(_train(root, extra, tmp_path / "a")) == 0
    out = capsys.readouterr().out
    assert ("warning: class 'Ghost' has no training video (1 of 3 classes): the model gets an output for it that "
            "it never learns") in out
    assert (tmp_path / "a" / "last.pt").is_file()
