"""`stfn import-mmaction` on the command line: mistakes in one sentence, its flags, and a real run on a
synthetic MMAction2 TSN checkpoint whose result `stfn predict` and `stfn.load_model` read. The
conversion itself (the key map, the network computing what MMAction2's does, refused files and keys):
tests/test_mmaction.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import stfn
from stfn.cli import main
from stfn.data.synthetic.render import write_video
from test_mmaction import mmaction_state, reference, save_mmaction

from .command_helpers import check_documented_usage, one_sentence

CLASSES = ["Jump", "Run", "Walk"]


@pytest.fixture(scope="module")
def rgb_r50(tmp_path_factory) -> Path:
    """An MMAction2 TSN checkpoint: ResNet-50, RGB, 3 classes, random weights."""
    return save_mmaction(tmp_path_factory.mktemp("mmaction") / "tsn_r50_rgb.pth", mmaction_state(*reference(50, 3, 3)))


def test_a_user_mistake_is_one_sentence(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.pth")
    one_sentence(capsys, "import-mmaction", [missing, "--out", str(tmp_path / "m.pt")],
                 f"MMAction2 checkpoint '{missing}' does not exist")


def test_flags_are_named_as_typed(rgb_r50, tmp_path, capsys) -> None:
    out = str(tmp_path / "m.pt")
    one_sentence(capsys, "import-mmaction", [str(rgb_r50), "--out", out, "--modality", "flow"],
                 f"--modality is flow but MMAction2 checkpoint '{rgb_r50}' is an RGB model")
    one_sentence(capsys, "import-mmaction", [str(rgb_r50), "--out", out, "--flow-length", "5"],
                 "--flow-length is given (5) but")
    one_sentence(capsys, "import-mmaction", [str(rgb_r50), "--out", str(tmp_path / "m.pth")],
                 f"--out must be a .pt file, got '{tmp_path / 'm.pth'}'")
    one_sentence(capsys, "import-mmaction", [str(rgb_r50), "--out", out, "--set", "model.num_classes=4"],
                 "--set may set data.*, train.* and name, not 'model.num_classes'")
    (tmp_path / "two.txt").write_text("a\nb\n")
    one_sentence(capsys, "import-mmaction", [str(rgb_r50), "--out", out, "--classes", str(tmp_path / "two.txt")],
                 f"--classes file '{tmp_path / 'two.txt'}' lists 2 classes but MMAction2 checkpoint")
    assert not Path(out).exists()


def test_help_lists_the_flags(capsys) -> None:
    text = check_documented_usage("import-mmaction", capsys)
    assert all(flag in text for flag in ("--out", "--modality", "--classes", "--flow-length", "--set"))


def test_a_converted_checkpoint_predicts_with_its_class_names(rgb_r50, tmp_path, capsys) -> None:
    (tmp_path / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, 1)))
    out = tmp_path / "tsn_rgb.pt"
    small = ["--set", "data.frames=2", "--set", "data.test_crops=1", "--set", "data.scale_size=72",
             "--set", "data.crop_size=64"]  # one clip of 2 crops of 64 px: a fast predict
    assert main(["import-mmaction", str(rgb_r50), "--out", str(out), "--classes", str(tmp_path / "classInd.txt"),
                 *small]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out}: MMAction2 ResNet-50, rgb, 3 classes; test protocol 2 positions x 1 crops "
                           "of 64 from a short side of 72 (--set; MMAction2's TSN test pipeline: 25 x 10 crops"), said
    loaded = stfn.load_model(out)
    assert loaded.classes == CLASSES and loaded.card["source"]["format"] == "mmaction2"
    assert loaded.card["backbone"] == "resnet50" and loaded.card["streams"] == ["rgb"]
    frames = np.random.default_rng(0).integers(0, 256, (8, 72, 96, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", frames)
    assert main(["predict", str(out), str(tmp_path / "clip.mp4"), "--json", "--top-k", "3"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]["top"]
    assert sorted(t["class"] for t in top) == sorted(CLASSES)
    assert abs(sum(t["prob"] for t in top) - 1) < 1e-4
