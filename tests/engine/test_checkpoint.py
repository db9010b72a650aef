"""Checkpoints: weights_only loading, rebuilding the model alone, clear errors naming the file."""

from __future__ import annotations

import os
import pickle
import random
import re

import numpy as np
import pytest
import torch
from engine_helpers import tiny_config

from stfn.config import config_to_dict
from stfn.engine.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_backbone,
    load_checkpoint,
    load_model,
    make_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from stfn.models import build_model


class Evil:
    """An arbitrary pickled object, which ``weights_only=True`` refuses to load."""


def _save(tmp_path, cfg, name="model.pt"):
    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = make_checkpoint(model, cfg, ["a", "b", "c", "d"], 3, optimizer=opt, dataset={"dataset": "fake"},
                           train_videos=["a/v1"], metrics={"top1": 50.0, "predictions": [1, 2]})
    save_checkpoint(ckpt, tmp_path / name)
    return model, tmp_path / name


def test_checkpoint_is_weights_only_and_self_describing(tmp_path) -> None:
    cfg = tiny_config()
    model, path = _save(tmp_path, cfg)
    raw = torch.load(path, weights_only=True)
    assert raw["config"] == config_to_dict(cfg)
    assert raw["classes"] == ["a", "b", "c", "d"] and raw["epoch"] == 3
    assert raw["train_videos"] == ["a/v1"] and raw["dataset"] == {"dataset": "fake"}
    assert raw["metrics"] == {"top1": 50.0}  # per-video predictions are not stored
    assert set(raw["rng"]) == {"torch", "cuda", "python", "numpy"}
    assert raw["optimizer"] is not None and raw["stfn_version"]
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary file


def test_load_model_rebuilds_the_network_alone(tmp_path) -> None:
    cfg = tiny_config()
    model, path = _save(tmp_path, cfg)
    raw = torch.load(path, weights_only=True)
    raw["config"]["model"]["pretrained"] = True  # cnn_small has no pretrained weights: must be forced off
    torch.save(raw, path)
    loaded, cfg2, ckpt = load_model(path)
    assert not loaded.training and cfg2.model.pretrained is False
    model.eval()
    batch = {"rgb": torch.randn(2, 4, 3, 32, 32), "flow": torch.randn(2, 4, 4, 32, 32)}
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))


def test_incompatible_checkpoint_names_the_file(tmp_path) -> None:
    cfg = tiny_config()
    _, path = _save(tmp_path, cfg)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["model"]["num_classes"] = 7  # the stored weights have 4 classes
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt.*shapes differ.*head\.fc"):
        load_model(tmp_path / "bad.pt")
    ckpt["config"]["model"]["num_classes"] = 4
    ckpt["config"]["model"]["head"]["blocks"] = 2
    torch.save(ckpt, tmp_path / "bad2.pt")
    with pytest.raises(CheckpointError, match=r"bad2\.pt.*missing"):
        load_model(tmp_path / "bad2.pt")
    ckpt["config"]["model"]["no_such_key"] = 1
    torch.save(ckpt, tmp_path / "bad3.pt")
    with pytest.raises(CheckpointError, match=r"bad3\.pt.*no_such_key"):
        load_model(tmp_path / "bad3.pt")


def test_unreadable_files_give_one_sentence(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"text\.pt' is not a PyTorch checkpoint \(it holds text\)$"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt' is not an stfn checkpoint"):
        load_checkpoint(tmp_path / "other.pt")

    torch.save({"model": Evil(), "config": {}, "classes": []}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt' contains code .*test_checkpoint\.Evil"):
        load_checkpoint(tmp_path / "evil.pt")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this should never run",))


@pytest.mark.parametrize("zipped", [True, False])
def test_refusals_say_what_the_file_is_in_our_own_sentence(tmp_path, zipped) -> None:
    """Issue 17 item 8: a checkpoint with code in it (torch's format and a bare pickle), random bytes,
    an empty file and a truncated checkpoint each get one sentence of ours: never PyTorch's advice to
    load with weights_only=False, never cut short."""
    cfg = tiny_config()
    _, good = _save(tmp_path, cfg)
    evil = tmp_path / "evil.pt"
    if zipped:
        torch.save({"model": RunsCode(), "config": {}, "classes": []}, evil)
    else:
        evil.write_bytes(pickle.dumps({"model": RunsCode()}, protocol=4))
    (tmp_path / "random.pt").write_bytes(bytes(random.Random(0).randrange(1, 256) for _ in range(5000)).replace(b"\x80", b"x"))
    (tmp_path / "empty.pt").write_bytes(b"")
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    expected = {
        "evil.pt": r"contains code that loading it would run \(it refers to (posix|os)\.system\); .* source you trust$",
        "random.pt": r"is not a PyTorch checkpoint \(it is neither a zip archive nor a pickle\)$",
        "empty.pt": r"is empty \(0 bytes\)",
        "cut.pt": r"is truncated or damaged",
    }
    for name, pattern in expected.items():
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(tmp_path / name)
        message = str(caught.value)
        assert re.search(pattern, message), message
        assert "weights_only" not in message and "\n" not in message and "\x1b" not in message


def test_a_torchscript_file_and_escape_codes_in_a_pickle(tmp_path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    with pytest.raises(CheckpointError, match=r"ts\.pt' is a TorchScript file .*not an stfn checkpoint$"):
        load_checkpoint(tmp_path / "ts.pt")
    # a bare pickle that calls "os\x1b[31m.system": the name is printed escaped
    evil = b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8c\x07os\x1b[31m\x94\x8c\x06system\x94\x93\x94."
    (tmp_path / "esc.pt").write_bytes(evil)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "esc.pt")
    assert "\x1b" not in str(caught.value) and "refers to os\\x1b[31m.system" in str(caught.value)


def test_two_stage_backbone_initialisation(tmp_path) -> None:
    rgb_cfg = tiny_config(streams=["rgb"])
    rgb_model, rgb_path = _save(tmp_path, rgb_cfg, "rgb.pt")
    two = build_model(tiny_config().model)
    load_backbone(two, "rgb", rgb_path)
    for k, v in rgb_model.backbones["rgb"].state_dict().items():
        assert torch.equal(two.backbones["rgb"].state_dict()[k], v)
    with pytest.raises(CheckpointError, match=r"rgb\.pt' has no 'flow' backbone"):
        load_backbone(two, "flow", rgb_path)
    flow_cfg = tiny_config(streams=["flow"])
    flow_cfg.model.flow_length = 3  # 6 input channels vs the model's 4
    _, flow_path = _save(tmp_path, flow_cfg, "flow.pt")
    with pytest.raises(CheckpointError, match=r"'flow' backbone of checkpoint '.*flow\.pt'.*shapes differ.*\(32, 6, 3, 3\) vs \(32, 4, 3, 3\)"):
        load_backbone(two, "flow", flow_path)


def test_rng_state_round_trip() -> None:
    state = get_rng_state()
    a = (torch.rand(3), random.random(), np.random.rand(2))
    set_rng_state(state)
    b = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])
