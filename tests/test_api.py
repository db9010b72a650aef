"""The public Python API (``stfn.*``, :mod:`stfn.api`): lazy names, models by name, save/load, training
with your own Dataset, errors that name the parameter, and ``examples/`` run as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import stfn
from stfn.config import ConfigError
from stfn.models import ARCHS
from suite_helpers import REPO, VIDEOS


def test_import_stfn_loads_no_torch_and_every_public_name_resolves() -> None:
    code = "import sys, stfn; print('torch' in sys.modules, stfn.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", stfn.__version__]
    assert sorted(stfn.__all__) == sorted([*stfn._API, "__version__"])
    for name in stfn._API:
        assert getattr(stfn, name) is not None, name
    assert set(stfn._API) <= set(dir(stfn))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        stfn.nope  # noqa: B018


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_create_model_builds_every_arch_as_a_video_network(arch: str) -> None:
    assert stfn.list_models() == sorted(ARCHS)
    backbone = "resnet18" if arch == "st_resnet" else "cnn_small"  # ST-ResNet joins two ResNets
    model = stfn.create_model(arch, num_classes=3, backbone=backbone, flow_length=2)
    assert isinstance(model, stfn.VideoNetwork) and isinstance(model, torch.nn.Module)
    assert model.config.arch == arch and model.config.num_classes == 3 and model.streams == ["rgb", "flow"]
    batch = {"rgb": torch.randn(2, 4, 3, 32, 32), "flow": torch.randn(2, 4, 4, 32, 32)}
    assert model.eval()(batch).shape == (2, 3)


def test_create_model_errors_name_the_parameter() -> None:
    with pytest.raises(ConfigError, match=r"^create_model\(\): arch 'stnf' is not a model \(choose st_resnet, stfn"):
        stfn.create_model("stnf", num_classes=2)
    with pytest.raises(ConfigError, match=r"^create_model\(\): unknown option 'flow_len' \(options: backbone"):
        stfn.create_model("stfn", num_classes=2, flow_len=3)
    with pytest.raises(ConfigError, match=r"^create_model\(\): .*option 'head.kernel_sizes'"):
        stfn.create_model("stfn", num_classes=2, backbone="cnn_small", head={"kernel_sizes": [2]})
    with pytest.raises(ConfigError, match=r"^create_model\(\): .*'streams'"):
        stfn.create_model("stfn", num_classes=2, backbone="cnn_small", streams=["depth"])


def test_save_load_and_checkpoint_path_round_trip(tmp_path) -> None:
    model = stfn.create_model("tsn", num_classes=2, backbone="cnn_small", streams=["rgb"])
    path = stfn.save_model(model, tmp_path / "sub" / "m.pt", classes=["a", "b"], epoch=3, metrics={"top1": 50.0})
    loaded = stfn.load_model(path)
    assert isinstance(loaded, stfn.LoadedModel) and not loaded.model.training
    assert (loaded.classes, loaded.epoch, loaded.metrics["top1"], loaded.config.model.arch) == (["a", "b"], 3, 50.0, "tsn")
    for (k, a), b in zip(model.state_dict().items(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    again = stfn.create_model("tsn", num_classes=2, backbone="cnn_small", streams=["rgb"], checkpoint_path=path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))
    assert loaded.to_dict()["classes"] == ["a", "b"]
    with pytest.raises(stfn.StfnError, match=r"create_model\(checkpoint_path='.*m.pt'\) does not fit the model"):
        stfn.create_model("tsn", num_classes=5, backbone="cnn_small", streams=["rgb"], checkpoint_path=path)
    with pytest.raises(ConfigError, match=r"^save_model\(\): 3 classes given for a model with 2 outputs$"):
        stfn.save_model(model, tmp_path / "x.pt", classes=["a", "b", "c"])
    with pytest.raises(TypeError, match="save_model"):
        stfn.save_model(torch.nn.Linear(2, 2), tmp_path / "x.pt", classes=["a", "b"])


class _Toy(Dataset):
    """Class 0: bright clips; class 1: dark ones. ``rgb (T=2, 3, 16, 16)``."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        rgb = torch.rand(2, 3, 16, 16, generator=g) + (1.0 if i % 2 == 0 else -1.0)
        return {"rgb": rgb, "label": i % 2, "index": i, "video": f"v{i}"}


def test_train_one_epoch_and_evaluate_with_your_own_dataset() -> None:
    torch.manual_seed(0)
    model = stfn.create_model("tsn", num_classes=2, backbone="cnn_small", streams=["rgb"], tsn_dropout=0.0)
    loader = DataLoader(_Toy(), batch_size=4, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    losses = []
    for epoch in range(4):
        stats = stfn.train_one_epoch(model, torch.nn.CrossEntropyLoss(), opt, sched, loader, "cpu", epoch, accumulate=2)
        assert isinstance(stats, stfn.EpochStats) and stats.samples == 8 and stats.steps == 1
        losses.append(stats.loss)
    assert losses[-1] < losses[0]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**4)  # one scheduler step per optimiser step
    metrics = stfn.evaluate(model, DataLoader(_Toy(), batch_size=4), torch.device("cpu"))
    assert metrics["n"] == 8 and metrics["top1"] == 100.0
    assert set(stats.to_dict()) == {"loss", "top1", "samples", "seconds", "samples_per_s", "lr", "steps"}
    with pytest.raises(ValueError, match="accumulate must be >= 1"):
        stfn.train_one_epoch(model, torch.nn.CrossEntropyLoss(), opt, None, loader, "cpu", 0, accumulate=0)


def test_loaded_model_predicts_like_the_predictor_from_the_checkpoint(tmp_path) -> None:
    from stfn.data.synthetic.render import write_video

    video = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    write_video(video, rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8))
    model = stfn.create_model("stfn", num_classes=2, backbone="cnn_small", flow_length=2)
    path = stfn.save_model(model, tmp_path / "m.pt", classes=["a", "b"])
    options = {"frames": 3, "crops": 1, "device": "cpu", "amp": "none"}
    mine = stfn.load_model(path).predictor(**options).predict(video)
    theirs = stfn.Predictor.from_checkpoint(path, **options).predict(video)
    assert mine["ok"] and [t["class"] for t in mine["top"]] == [t["class"] for t in theirs["top"]]
    assert [t["prob"] for t in mine["top"]] == pytest.approx([t["prob"] for t in theirs["top"]], abs=1e-5)


@pytest.mark.e2e
@pytest.mark.shared("videos/demo.mp4")
def test_the_example_runs_as_a_user_runs_it(tmp_path) -> None:
    """``examples/train_in_python.py``: build by name, train two epochs on its own Dataset, save, load,
    predict a real video, all through ``stfn.*`` names."""
    script = REPO / "examples" / "train_in_python.py"
    assert "from stfn." not in script.read_text() and "import stfn\n" in script.read_text()
    done = subprocess.run([sys.executable, str(script), "--video", str(VIDEOS / "demo.mp4"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("models: st_resnet, stfn,") and lines[1].startswith("epoch 1: train loss")
    assert "same weights: True" in lines[3] and (tmp_path / "model.pt").is_file()
    assert lines[4].startswith("demo.mp4: slide_") and "280 frames" in lines[4]
