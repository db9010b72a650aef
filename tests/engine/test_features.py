"""Cached features: the folder layout, the features dataset, extraction, and head-only training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from engine_helpers import tiny_config

from stfn.data.features import FeatureDataset, load_features_meta
from stfn.engine.checkpoint import load_checkpoint, load_model
from stfn.engine.evaluate import evaluate_checkpoint
from stfn.engine.features import extract_features
from stfn.engine.train import train
from stfn.errors import StfnError
from suite_helpers import write_features


def test_feature_dataset_samples_segments(tmp_path) -> None:
    root = write_features(tmp_path / "f", frames=8, dim=16)
    test = FeatureDataset(root, "test", ["rgb", "flow"], frames=4, train=False)
    full = np.load(root / "test_rgb.npy").astype(np.float32)
    item = test[3]
    assert item["rgb_feat"].shape == (4, 16) and item["flow_feat"].shape == (4, 16)
    assert item["label"] == 3 and item["video"] == "class3/v_test_003" and item["index"] == 3
    assert torch.equal(item["rgb_feat"], torch.from_numpy(full[3, [1, 3, 5, 7]]))  # segment centres
    train_set = FeatureDataset(root, "train", ["rgb"], frames=4, train=True)
    full = np.load(root / "train_rgb.npy").astype(np.float32)
    a, b = train_set[(0, 123)]["rgb_feat"], train_set[(0, 123)]["rgb_feat"]
    assert torch.equal(a, b)  # same seed, same sample
    rows = [int(np.flatnonzero((full[0] == r.numpy()).all(1))[0]) for r in a]
    assert all(2 * t <= p < 2 * t + 2 for t, p in enumerate(rows))  # one position per segment
    assert FeatureDataset(root, "test", ["rgb"], frames=0, train=False)[0]["rgb_feat"].shape == (8, 16)
    with pytest.raises(StfnError, match="no 'flow' features"):
        FeatureDataset(write_features(tmp_path / "g", streams=("rgb",), dim=8), "test", ["flow"], 4, False)
    with pytest.raises(StfnError, match="is not a features folder"):
        FeatureDataset(tmp_path, "test", ["rgb"], 4, False)


def test_head_trains_on_cached_features(tmp_path) -> None:
    root = write_features(tmp_path / "f", n_train=32, n_test=16, frames=6, dim=256)
    cfg = tiny_config(epochs=8, lr=1e-2, schedule="constant")
    cfg.data.features = str(root)
    cfg.model.head.hidden_dim = 32
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.best["top1"] >= 87.5  # 4 classes from two streams' temporal patterns
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    trainable = [k for k in ckpt["model"] if k.startswith("head.")]
    assert trainable and ckpt["train_videos"][0] == "class0/v_train_000"
    again = evaluate_checkpoint(tmp_path / "run" / "best.pt", progress=False)
    assert again.top1 == result.best["top1"] and again.n == 16


def test_extract_features_from_a_checkpoint(tmp_path, fake_data) -> None:
    cfg = tiny_config(epochs=1)
    cfg.train.eval_every = 0
    train(cfg, tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "last.pt"
    out = extract_features(ckpt, tmp_path / "feats", frames=3, progress=False)
    meta = load_features_meta(out)
    assert meta["frames"] == 3 and meta["feature_dim"] == 256 and meta["streams"] == ["rgb", "flow"]
    assert meta["source_checkpoint"] == str(ckpt.resolve())
    assert len(meta["subsets"]["train"]["videos"]) == 16 and len(meta["subsets"]["test"]["videos"]) == 8
    arr = np.load(out / "test_flow.npy")
    assert arr.shape == (8, 3, 256) and arr.dtype == np.float16
    # the stored rows are the model's own per-frame features of the test views
    model, cfg2, _ = load_model(ckpt)
    cfg2.data.frames = 3
    item = fake_data()(cfg2, "test", views=1)[5]
    with torch.no_grad():
        feats = model.forward_features({k: item[k][0][None] for k in ("rgb", "flow")})
    assert np.allclose(arr[5], feats["flow_feat"][0].numpy(), rtol=1e-2, atol=1e-2)
    assert meta["subsets"]["test"]["labels"][5] == item["label"]
    # a second call with the same settings keeps the finished subsets; other settings redo them
    stamp = (out / "test_flow.npy").stat().st_mtime_ns
    extract_features(ckpt, out, frames=3, progress=False)
    assert (out / "test_flow.npy").stat().st_mtime_ns == stamp
    extract_features(ckpt, out, subsets=["test"], frames=2, progress=False)
    assert np.load(out / "test_flow.npy").shape == (8, 2, 256)
    assert list(load_features_meta(out)["subsets"]) == ["test"]
    # a head trained on these features starts from (and keeps) the backbones that made them
    head = tiny_config(epochs=1)
    head.data.features = str(tmp_path / "feats")
    head.data.frames = 2
    head.train.eval_every = 0
    extract_features(ckpt, out, subsets=["train"], frames=2, progress=False)
    train(head, tmp_path / "head", progress=False)
    src = load_checkpoint(ckpt)["model"]
    got = load_checkpoint(tmp_path / "head" / "last.pt")["model"]
    assert all(torch.equal(got[k], src[k]) for k in src if k.startswith("backbones."))
    assert json.loads((out / "features.json").read_text())["subsets"]["train"]["videos"]
