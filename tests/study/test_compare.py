"""`stfn compare` (``stfn.study.compare``): the demo's protocol on a user's own prepared videos and
splits, its report, resume, and one sentence for each of the user's mistakes."""

from __future__ import annotations

import json

import pytest

from dataset_helpers import write_tiny_prepared, write_tiny_splits
from stfn.cli import main
from stfn.errors import ParameterError, StfnError
from stfn.study.compare import run_compare
from stfn.study.presets import HEADS, MODELS


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_prepared(tmp_path / "prepared"), write_tiny_splits(tmp_path / "splits")


def _quiet(*_: object) -> None:
    pass


@pytest.mark.e2e
def test_tiny_comparison_report_resume_and_changed_setting(tmp_path, tiny, capsys) -> None:
    root, splits = tiny
    out = tmp_path / "cmp"
    assert main(["compare", str(root), "--splits", str(splits), "--out", str(out), "--preset", "tiny",
                 "--no-progress", "--threads", "1"]) == 0
    assert "| STFN |" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert list(res["models"]) == list(MODELS)  # every head, in table order
    assert [c["name"] for c in res["classes"]] == ["Jump", "Wave"] and res["train_videos"] == 8
    for entry in res["models"].values():
        assert sum(entry["counts"].values()) == 4 and set(entry["counts"]) == {"Jump", "Wave"}
        assert entry["metrics"]["Jump"] is not None and entry["metrics"]["overall"] is not None
    assert len(res["models"]["STFN"]["seeds"]) == 2 and set(res["timings"]) == {
        "backbones", "two_stream", "features", "heads", "report"}  # a prepared input is not prepared again
    report = (out / "report.md").read_text()
    for part in ("## Test accuracy (%)", "## Claims, checked on this run", "## Accuracy per class (%)",
                 "## Settings", "## Time per step (s)", "## Machine", "| backbone | cnn_small |"):
        assert part in report, part
    assert (out / "confusion_stfn_no_fusion.png").is_file() and (out / "classes.png").is_file()
    # the same command again: everything is there, the same numbers come back
    again = run_compare(root, splits, out, preset="tiny", progress=False, log=_quiet)
    assert again["models"]["STFN"]["per_seed"] == res["models"]["STFN"]["per_seed"]
    with pytest.raises(StfnError, match=r"holds a compare run with other settings \(head_seeds 2 there, 3 now\)"):
        run_compare(root, splits, out, preset="tiny", seeds=3, progress=False, log=_quiet)


def test_the_users_mistakes_are_one_sentence(tmp_path, tiny) -> None:
    root, splits = tiny
    (tmp_path / "empty").mkdir()
    with pytest.raises(StfnError, match=r"no videos found in '.*empty' \(looked for \.avi, \.mp4"):
        run_compare(tmp_path / "empty", splits, tmp_path / "a", preset="tiny", log=_quiet)
    other = write_tiny_splits(tmp_path / "other", classes=("Run", "Walk"))
    with pytest.raises(StfnError, match=r"none of the 8 videos of the train list of split 1 is in '.*prepared' "
                                        r"\(e\.g\. 'Run/v_Run_g02_c01'\): are these the lists of these videos\?"):
        run_compare(root, other, tmp_path / "b", preset="tiny", log=_quiet)
    with pytest.raises(StfnError, match=r"has 8 training videos; preset 'quick' trains in batches of 8 and needs "
                                        r"at least 16"):
        run_compare(root, splits, tmp_path / "c", preset="quick", log=_quiet)
    with pytest.raises(ParameterError, match="^models names an unknown head 'resnet' "):
        run_compare(root, splits, tmp_path / "d", preset="tiny", models=["resnet"], log=_quiet)
    with pytest.raises(StfnError, match="unknown compare preset 'huge'"):
        run_compare(root, splits, tmp_path / "e", preset="huge", log=_quiet)


def test_a_backbone_whose_weights_cannot_be_downloaded(tmp_path, tiny, monkeypatch) -> None:
    from torchvision import models

    root, splits = tiny

    def offline(*args, **kwargs):
        raise OSError("no internet")  # what the weights download raises offline (URLError is an OSError)

    monkeypatch.setattr(models, "get_model", offline)
    with pytest.raises(StfnError, match=r"the pretrained weights of backbone 'resnet18' could not be downloaded "
                                        r"\(OSError: no internet\).*\(stfn compare: --backbone cnn_small needs no "
                                        r"weights\)"):
        run_compare(root, splits, tmp_path / "cmp", preset="tiny", backbone="resnet18", log=_quiet)
    assert not (tmp_path / "cmp" / "runs").exists()  # refused before any training


def test_models_choose_the_heads_and_names_are_the_run_folders() -> None:
    from stfn.study.compare import _heads

    assert list(_heads(["stfn", "ts_lstm"])) == ["TS-LSTM", "STFN"]  # table order
    assert list(_heads(None)) == list(HEADS)
