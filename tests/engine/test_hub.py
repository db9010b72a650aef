"""Hub folders and repo ids (``stfn.engine.hub``): safetensors only, the same model as the ``.pt``, every
command that takes a checkpoint takes a folder, clear sentences for what cannot be used. The suite runs the
Hub offline (tests/conftest.py)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import stfn
from stfn.cli import main
from stfn.engine import hub
from stfn.engine.checkpoint import CheckpointError, load_backbone, load_checkpoint
from stfn.errors import StfnError
from suite_helpers import REPO


@pytest.fixture
def model_pt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = stfn.create_model("stfn", num_classes=3, backbone="cnn_small", flow_length=2)
    return stfn.save_model(model, tmp_path / "m.pt", classes=["a", "b", "c"], epoch=2, metrics={"top1": 66.7})


def _video(path: Path) -> Path:
    from stfn.data.synthetic.render import write_video

    write_video(path, np.random.default_rng(0).integers(0, 255, (12, 48, 64, 3), dtype=np.uint8))
    return path


def test_a_hub_folder_holds_the_same_model_as_the_checkpoint(tmp_path, model_pt) -> None:
    folder = stfn.save_pretrained(model_pt, tmp_path / "hub")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["library_name"] == "stfn" and meta["stfn"]["classes"] == ["a", "b", "c"]
    assert meta["stfn"]["inputs"]["flow"]["channels"] == 4 and "optimizer" not in meta["stfn"]
    a, b = load_checkpoint(model_pt), load_checkpoint(folder)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["source"] == {"format": "hub", "path": str(folder)} and b["epoch"] == 2
    loaded = stfn.load_model(folder)
    assert loaded.classes == ["a", "b", "c"] and loaded.metrics["top1"] == 66.7
    video = _video(tmp_path / "clip.mp4")
    options = {"frames": 3, "crops": 1, "device": "cpu", "amp": "none"}
    from_pt = stfn.Predictor.from_checkpoint(model_pt, **options).predict(video)["top"]
    from_folder = stfn.Predictor.from_checkpoint(folder, **options).predict(video)["top"]
    assert [t["class"] for t in from_pt] == [t["class"] for t in from_folder]
    assert [t["prob"] for t in from_pt] == pytest.approx([t["prob"] for t in from_folder], abs=1e-6)
    other = stfn.create_model("stfn", num_classes=3, backbone="cnn_small", flow_length=2)
    load_backbone(other, "rgb", folder)  # train.init_rgb: a folder too
    for k, v in other.backbones["rgb"].state_dict().items():
        assert torch.equal(v, a["model"][f"backbones.rgb.{k}"]), k


def test_pickled_weights_in_a_folder_are_refused_and_never_loaded(tmp_path, model_pt) -> None:
    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "pytorch_model.bin").write_bytes(pickle.dumps(Boom()))
    (evil / "config.json").write_text(json.dumps({"stfn": {"config": {}}}))
    with pytest.raises(hub.HubError, match=r"holds pickled weights \(pytorch_model.bin\) and no model.safetensors: "
                                           r"stfn reads a folder's weights from safetensors only"):
        load_checkpoint(evil)
    good = stfn.save_pretrained(model_pt, tmp_path / "good")
    (good / "pytorch_model.bin").write_bytes(pickle.dumps(Boom()))  # beside real safetensors: never read
    assert load_checkpoint(good)["classes"] == ["a", "b", "c"]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(("damage", "expected"), [
    ("weights", r"model.safetensors' is not a readable safetensors file"),
    ("config_text", r"config.json' is not valid JSON"),
    ("config_other", r"config.json' is not an stfn model config \(no 'stfn' section"),
    ("no_config", r"has model.safetensors but no config.json"),
    ("empty", r"is not a model folder \(no model.safetensors; write one with `stfn export CKPT --format hub"),
])
def test_a_damaged_folder_is_one_sentence_naming_the_file(tmp_path, model_pt, damage, expected) -> None:
    folder = stfn.save_pretrained(model_pt, tmp_path / "hub")
    if damage == "weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "config_text":
        (folder / "config.json").write_text("{not json")
    elif damage == "config_other":
        (folder / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    elif damage == "no_config":
        (folder / "config.json").unlink()
    else:
        for p in folder.iterdir():
            p.unlink()
    with pytest.raises(StfnError, match=expected) as e:
        load_checkpoint(folder)
    assert "\n" not in str(e.value)


def test_repo_ids_and_paths_are_told_apart(tmp_path, monkeypatch) -> None:
    assert hub.is_repo_id("org/name") and hub.is_repo_id("my-org/stfn.ucf101-split1")
    assert not hub.is_repo_id("runs/best.pt") and not hub.is_repo_id("/abs/path") and not hub.is_repo_id("a/b/c")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    monkeypatch.chdir(tmp_path)
    assert not hub.is_repo_id("org/name")  # a folder by that name is a folder
    with pytest.raises(CheckpointError, match=r"^checkpoint 'runs/best.pt' does not exist$"):
        load_checkpoint("runs/best.pt")


def test_a_repo_id_is_fetched_through_huggingface_hub_and_offline_is_one_sentence(tmp_path, model_pt,
                                                                                  monkeypatch) -> None:
    with pytest.raises(hub.HubError, match=r"^'someone/stfn-ucf101' is not a local file and is not in the Hugging "
                                           r"Face Hub cache, and the Hub cannot be reached \(offline"):
        load_checkpoint("someone/stfn-ucf101")
    assert main(["predict", "someone/stfn-ucf101", str(tmp_path / "v.mp4")]) == 2
    folder = stfn.save_pretrained(model_pt, tmp_path / "snapshot")
    calls = []

    def snapshot_download(repo_id, allow_patterns):  # what the Hub would hand back: its cached snapshot
        calls.append((repo_id, allow_patterns))
        return str(folder)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    ckpt = load_checkpoint("someone/stfn-ucf101")
    assert calls == [("someone/stfn-ucf101", ["config.json", "model.safetensors", "README.md"])]
    assert ckpt["source"] == {"format": "hub", "repo": "someone/stfn-ucf101", "path": str(folder)}
    assert stfn.load_model("someone/stfn-ucf101").card["source"]["repo"] == "someone/stfn-ucf101"


@pytest.mark.e2e
def test_tiny_run_exported_as_a_folder_evaluates_predicts_and_serves_like_best_pt(tmp_path, tiny_data, capsys) -> None:
    """Issue 27's check: train the tiny preset, export it as a Hub folder, and eval / predict / serve it from
    the folder with the same top-1 as from best.pt."""
    run = tmp_path / "run"
    data = ["--data", tiny_data["root"], "--splits", tiny_data["splits"]]
    assert main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), *data, "--out", str(run), "--no-progress",
                 "--set", "train.epochs=1"]) == 0
    assert main(["export", str(run / "best.pt"), "--format", "hub", "--out", str(tmp_path / "hub"),
                 "--repo", "me/tiny"]) == 0
    assert "hf upload me/tiny" in capsys.readouterr().out
    card = (tmp_path / "hub" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: stfn" in card and "stfn train --config" not in card[:200]
    assert "stfn predict me/tiny video.mp4" in card
    results = {}
    for name, source in (("pt", run / "best.pt"), ("hub", tmp_path / "hub")):
        out = tmp_path / f"eval_{name}.json"
        assert main(["eval", str(source), "--no-progress", "--json", str(out), "--out", str(tmp_path / name)]) == 0
        results[name] = json.loads(out.read_text())["results"][0]
    assert results["hub"]["top1"] == results["pt"]["top1"] and results["hub"]["n"] == results["pt"]["n"] > 0
    video = next((Path(tiny_data["root"]).parent / "syn" / "videos").rglob("*.mp4"))
    tops, _ = [], capsys.readouterr()
    for source in (run / "best.pt", tmp_path / "hub"):
        assert main(["predict", str(source), str(video), "--json", "--device", "cpu"]) == 0
        tops.append(json.loads(capsys.readouterr().out)["results"][0]["top"])
    assert tops[0] == tops[1]
    from stfn.serve.models import load_models

    served = load_models([str(tmp_path / "hub")], backend="eager", device="cpu", amp="none")
    (entry,) = served.values()
    assert entry.predictor.card["source"]["format"] == "hub"
    assert entry.predictor.predict(video)["top"][0]["class"] == tops[0][0]["class"]


def test_eval_of_a_repo_id_writes_beside_the_working_folder_not_into_an_org_folder() -> None:
    from stfn.engine.evaluate import _default_out

    assert _default_out("lab/stfn-ucf101", 1, 10, None) == Path("eval_lab_stfn-ucf101_split1_10crops")
    assert _default_out("runs/a/best.pt", 2, None, None) == Path("runs/a/eval_best_split2")
