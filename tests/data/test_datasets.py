"""Datasets end to end: fake prepared trees from the real split lists, loaders, missing videos, data-info."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stfn.cli import main as cli_main
from stfn.config import ConfigError, DataConfig
from stfn.data.datasets import SeededSampler, build_dataset, build_loader, decode_jpegs
from stfn.data.sampling import sample_clip
from stfn.data.splits import load_split
from stfn.errors import StfnError
from suite_helpers import DATASETS

UCF = DATASETS / "ucf101" / "ucfTrainTestlist"
HMDB = DATASETS / "hmdb51" / "testTrainMulti_7030_splits"
needs_shared = pytest.mark.shared("datasets/ucf101/ucfTrainTestlist", "datasets/hmdb51/testTrainMulti_7030_splits")

torch.set_num_threads(1)
W, H = 48, 40  # stored frame size (short side 40 = scale_size below)
UCF_CLASSES = ("ApplyEyeMakeup", "Archery", "YoYo")


def level(frame: int) -> int:
    """Grey level of RGB frame ``frame`` (0-based) in the fake tree: the frame is identifiable after JPEG."""
    return 10 + 5 * frame


def write_jpeg(path: Path, img: torch.Tensor, quality: int = 95) -> None:
    """uint8 ``(C, H, W)`` (C = 1 or 3) as a JPEG file, through Pillow."""
    arr = img.numpy()
    Image.fromarray(arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))).save(
        path, format="JPEG", quality=quality)


def write_prepared(root: Path, videos: dict[str, int], failed: tuple[str, ...] = ()) -> None:
    """A prepared folder per docs/interfaces.md: flat grey frames, flat flow (x = 100 + k, y = 200 - k)."""
    entries = {}
    for key, n in videos.items():
        folder = root / key
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            write_jpeg(folder / f"img_{k + 1:05d}.jpg", torch.full((3, H, W), level(k), dtype=torch.uint8))
        for k in range(n - 1):
            for comp, value in (("x", 100 + k), ("y", 200 - k)):
                write_jpeg(folder / f"flow_{comp}_{k + 1:05d}.jpg", torch.full((1, H, W), value, dtype=torch.uint8))
        entries[key] = {"source": key + ".avi", "status": "ok", "frames": n, "flows": n - 1, "width": W,
                        "height": H, "fps": 25.0, "error": None}
    for key in failed:
        entries[key] = {"source": key + ".avi", "status": "failed", "frames": 0, "flows": 0, "width": 0,
                        "height": 0, "fps": 0.0, "error": "the file is truncated"}
    manifest = {"version": 1, "flow": {"algorithm": "dis", "preset": "fast", "bound": 20.0},
                "resize": {"short_side": H}, "videos": entries}
    (root / "manifest.json").write_text(json.dumps(manifest))


def ucf_subset(tmp_path: Path, train_per_class: int = 3, test_per_class: int = 2) -> Path:
    """Real ucfTrainTestlist lines (CRLF kept) of a few classes, in a split folder of their own."""
    out = tmp_path / "splits"
    out.mkdir()
    (out / "classInd.txt").write_bytes((UCF / "classInd.txt").read_bytes())
    for name, per_class in (("trainlist01.txt", train_per_class), ("testlist01.txt", test_per_class)):
        lines = (UCF / name).read_bytes().split(b"\r\n")
        kept = [ln for c in UCF_CLASSES for ln in [x for x in lines if x.startswith(c.encode() + b"/")][:per_class]]
        (out / name).write_bytes(b"".join(ln + b"\r\n" for ln in kept))
    return out


@pytest.fixture
def ucf_tree(tmp_path):
    splits = ucf_subset(tmp_path)
    s = load_split("ucf101", splits, 1)
    videos = {r.key: 3 + 2 * i for i, r in enumerate(s.train + s.test)}  # 3..21 frames
    write_prepared(tmp_path / "prep", videos)
    cfg = DataConfig(dataset="ucf101", root=str(tmp_path / "prep"), splits=str(splits), frames=4,
                     scale_size=H, crop_size=32, num_workers=0)
    return cfg, videos


@needs_shared
def test_ucf101_fake_tree_loads_into_documented_batches(ucf_tree):
    cfg, videos = ucf_tree
    train = build_dataset(cfg, "train", ["rgb", "flow"], flow_length=3)
    test = build_dataset(cfg, "test", ["rgb", "flow"], flow_length=3, views=3)
    assert len(train) == 9 and len(test) == 6 and len(train.classes) == 101
    assert train.identity == load_split("ucf101", cfg.splits, 1).identity == test.identity
    assert train.videos[0] == "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"
    batch = next(iter(build_loader(train, batch_size=4, train=True, workers=0, seed=0)))
    assert batch["rgb"].shape == (4, 4, 3, 32, 32) and batch["rgb"].dtype == torch.float32
    assert batch["flow"].shape == (4, 4, 6, 32, 32)
    assert batch["label"].dtype == torch.int64 and batch["index"].shape == (4,) and len(batch["video"]) == 4
    assert float(batch["flow"].abs().max()) <= 1.0
    for video, label, index in zip(batch["video"], batch["label"].tolist(), batch["index"].tolist(), strict=True):
        assert train.classes[label] == video.split("/")[0] and train.videos[index] == video
    assert {train.classes[x] for x in train.labels} == set(UCF_CLASSES)
    assert {train.labels[0], train.labels[-1]} == {0, 100}  # ApplyEyeMakeup, YoYo: real 0-based labels
    batch = next(iter(build_loader(test, batch_size=2, train=False, workers=0)))
    assert batch["rgb"].shape == (2, 3, 4, 3, 32, 32) and batch["flow"].shape == (2, 3, 4, 6, 32, 32)
    assert batch["video"] == test.videos[:2]
    # only the streams asked for are loaded
    rgb_only = build_dataset(cfg, "train", ["rgb"], flow_length=3)
    assert set(rgb_only[0]) == {"rgb", "label", "index", "video"}


@needs_shared
def test_items_read_the_sampled_frames_and_flow_fields(ucf_tree):
    cfg, videos = ucf_tree
    ds = build_dataset(cfg, "test", ["rgb", "flow"], flow_length=3)
    for i, key in enumerate(ds.videos):
        n = videos[key]
        clip = ds.load_clip(i)
        idx = sample_clip(n, n - 1, 4, 3, train=False)
        assert clip["rgb"].shape == (4, 3, H, W) and clip["flow"].shape == (4, 6, H, W)
        for t in range(4):
            assert abs(clip["rgb"][t].float().mean() - level(idx.rgb[t])) < 2
            for j, k in enumerate(idx.flow[t]):  # channels x1, y1, x2, y2, ...
                assert abs(clip["flow"][t, 2 * j].float().mean() - (100 + k)) < 2
                assert abs(clip["flow"][t, 2 * j + 1].float().mean() - (200 - k)) < 2


@needs_shared
def test_training_samples_do_not_depend_on_workers_and_change_per_epoch(ucf_tree):
    cfg, _ = ucf_tree
    ds = build_dataset(cfg, "train", ["rgb", "flow"], flow_length=3)

    def epoch(workers, e, seed=0):
        loader = build_loader(ds, batch_size=3, train=True, workers=workers, seed=seed)
        loader.sampler.set_epoch(e)
        return [b for b in loader]

    a, b = epoch(0, 1), epoch(1, 1)
    for x, y in zip(a, b, strict=True):
        assert x["video"] == y["video"] and torch.equal(x["rgb"], y["rgb"]) and torch.equal(x["flow"], y["flow"])
    c = epoch(0, 2)
    assert [x["video"] for x in a] != [x["video"] for x in c]
    d = epoch(0, 1, seed=1)
    assert not all(torch.equal(x["rgb"], y["rgb"]) for x, y in zip(a, d, strict=True))


def test_seeded_sampler_shards():
    for size, world in ((10, 3), (9, 3), (2, 4)):
        train = [list(SeededSampler(size, True, 7, rank=r, world_size=world, pad=True)) for r in range(world)]
        assert len({len(t) for t in train}) == 1 and len(train[0]) == len(SeededSampler(size, True, 7, 0, world))
        assert {i for t in train for i, _ in t} == set(range(size))
        evaluation = [list(SeededSampler(size, False, 7, rank=r, world_size=world, pad=False)) for r in range(world)]
        flat = sorted(i for t in evaluation for i, _ in t)
        assert flat == list(range(size))  # every video exactly once: no padded duplicates in the metrics
        assert [len(e) for e in evaluation] == [len(SeededSampler(size, False, 7, r, world, pad=False))
                                                for r in range(world)]
    s = SeededSampler(6, True, 0)
    first, second = list(s), list(s)  # without set_epoch the epoch advances on its own
    assert first != second
    s.set_epoch(0)
    assert list(s) == first
    assert dict(first) == dict(list(SeededSampler(6, True, 0)))  # seed of an item: a function of (seed, epoch, index)


@needs_shared
def test_missing_and_failed_videos_error_or_skip(ucf_tree, caplog):
    cfg, videos = ucf_tree
    manifest = json.loads((Path(cfg.root) / "manifest.json").read_text())
    gone = "Archery/v_Archery_g08_c02"
    del manifest["videos"][gone]
    broken = "YoYo/v_YoYo_g08_c01"
    manifest["videos"][broken].update(status="failed", error="cannot decode frame 3")
    (Path(cfg.root) / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StfnError) as err:
        build_dataset(cfg, "train", ["rgb"], flow_length=3)
    msg = str(err.value)
    assert "2 of 9 train videos of ucf101 split 1" in msg and cfg.root in msg
    assert f"1 missing from the manifest (first: {gone})" in msg and f"1 failed in prepare (first: {broken})" in msg
    assert "data.on_missing=skip" in msg
    cfg.on_missing = "skip"
    with caplog.at_level(logging.WARNING, logger="stfn.data"):
        ds = build_dataset(cfg, "train", ["rgb"], flow_length=3)
    assert len(ds) == 7 and gone not in ds.videos and broken not in ds.videos
    assert len(caplog.records) == 1 and "2 of 9 train videos" in caplog.records[0].getMessage()
    assert ds.identity == load_split("ucf101", cfg.splits, 1).identity  # the split, not what is prepared
    cfg.on_missing = "ignore"
    with pytest.raises(ConfigError, match="data.on_missing"):
        build_dataset(cfg, "train", ["rgb"], flow_length=3)


def test_config_and_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        build_dataset(DataConfig(dataset="ucf101", splits=str(tmp_path)), "train", ["rgb"], 5)
    (tmp_path / "classInd.txt").write_text("1 A\n")
    (tmp_path / "trainlist01.txt").write_text("A/a.avi 1\n")
    (tmp_path / "testlist01.txt").write_text("A/b.avi\n")
    cfg = DataConfig(dataset="ucf101", splits=str(tmp_path), root=str(tmp_path / "nope"))
    with pytest.raises(StfnError, match="prepared folder .*nope' does not exist"):
        build_dataset(cfg, "train", ["rgb"], 5)
    cfg.root = str(tmp_path)
    with pytest.raises(StfnError, match="no manifest.json"):
        build_dataset(cfg, "train", ["rgb"], 5)
    write_prepared(tmp_path, {"A/a": 3})
    with pytest.raises(StfnError, match="streams"):
        build_dataset(cfg, "train", ["depth"], 5)
    with pytest.raises(StfnError, match="subset"):
        build_dataset(cfg, "val", ["rgb"], 5)
    cfg.jpeg_decoder = "turbo"
    with pytest.raises(ConfigError, match="data.jpeg_decoder"):
        build_dataset(cfg, "train", ["rgb"], 5)


def test_short_videos_and_corrupt_frames(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "classInd.txt").write_text("1 A\n")
    (tmp_path / "s" / "trainlist01.txt").write_text("A/one.avi 1\nA/two.avi 1\nA/bad.avi 1\n")
    (tmp_path / "s" / "testlist01.txt").write_text("A/two.avi\n")
    write_prepared(tmp_path / "p", {"A/one": 1, "A/two": 2, "A/bad": 4})
    cfg = DataConfig(dataset="ucf101", splits=str(tmp_path / "s"), root=str(tmp_path / "p"), frames=8,
                     scale_size=H, crop_size=32)
    ds = build_dataset(cfg, "train", ["rgb", "flow"], flow_length=5)
    one, two = ds.load_clip(0, torch.Generator().manual_seed(0)), ds.load_clip(1, torch.Generator().manual_seed(0))
    assert torch.all(one["flow"] == 128) and one["flow"].shape == (8, 10, H, W)  # no flow: zero motion
    assert abs(two["flow"][:, 0::2].float().mean() - 100) < 2  # the one field, repeated
    assert ds[0]["flow"].shape == (8, 10, 32, 32) and ds[1]["rgb"].shape == (8, 3, 32, 32)
    flow_only = build_dataset(cfg, "train", ["flow"], flow_length=5)
    assert torch.all(flow_only.load_clip(0)["flow"] == 128)
    (tmp_path / "p" / "A" / "bad" / "img_00002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(StfnError, match="A/bad"):
        build_dataset(cfg, "test", ["rgb"], 5)  # fine: bad is not in the test list
        ds[2]
    (tmp_path / "p" / "A" / "bad" / "img_00003.jpg").unlink()
    with pytest.raises(StfnError, match=r"img_00003.jpg' cannot be read"):
        build_dataset(DataConfig(**{**cfg.__dict__, "frames": 4}), "train", ["rgb"], 5).load_clip(2)


def test_jpeg_decoders_agree(tmp_path):
    g = torch.Generator().manual_seed(0)
    img = (torch.tensor([220.0, 120.0, 30.0]).view(3, 1, 1) + torch.randn(3, 24, 32, generator=g) * 20).clamp(0, 255)
    write_jpeg(tmp_path / "a.jpg", img.to(torch.uint8), quality=90)
    write_jpeg(tmp_path / "g.jpg", img[:1].to(torch.uint8), quality=90)
    for gray, name in ((False, "a.jpg"), (True, "g.jpg")):
        ref = np.asarray(Image.open(tmp_path / name).convert("L" if gray else "RGB")).astype(int)
        for decoder in ("opencv", "torchvision", "pillow"):
            x = decode_jpegs([(tmp_path / name).read_bytes()] * 2, gray, decoder, tmp_path)
            assert x.shape == (2, 1 if gray else 3, 24, 32) and x.dtype == torch.uint8
            got = x[0, 0].numpy() if gray else x[0].permute(1, 2, 0).numpy()
            assert np.abs(got - ref).mean() < 1.0  # same pixels up to the IDCT of each libjpeg build
            assert torch.equal(x[0], x[1])
        if not gray:  # channel order is RGB for every decoder: the red channel is the red one
            assert decode_jpegs([(tmp_path / name).read_bytes()], False, "opencv", tmp_path)[0, 0].float().mean() == pytest.approx(ref[..., 0].mean(), abs=1)
    with pytest.raises(StfnError, match="unknown JPEG decoder"):
        decode_jpegs([(tmp_path / "a.jpg").read_bytes()], False, "turbojpeg", tmp_path)


def test_list_and_folder_datasets(tmp_path):
    keys = {"train/walk/v1": 5, "train/run/v2": 6, "test/walk/v3": 4, "test/run/v4": 7}
    write_prepared(tmp_path / "p", keys)
    (tmp_path / "train.txt").write_text("train/walk/v1 5 0\ntrain/run/v2 6 1\n")  # rawframes
    (tmp_path / "test.txt").write_text("test/walk/v3.mp4 0\ntest/run/v4.mp4 1\n")  # videos
    (tmp_path / "names.txt").write_text("walk\nrun\n")
    base = dict(root=str(tmp_path / "p"), frames=3, scale_size=H, crop_size=32)
    lst = DataConfig(dataset="list", train_list=str(tmp_path / "train.txt"), test_list=str(tmp_path / "test.txt"),
                     class_names=str(tmp_path / "names.txt"), **base)
    tr, te = build_dataset(lst, "train", ["rgb", "flow"], 2), build_dataset(lst, "test", ["rgb"], 2, views=10)
    assert tr.classes == ["walk", "run"] and tr.videos == ["train/walk/v1", "train/run/v2"] and tr.labels == [0, 1]
    assert te[1]["rgb"].shape == (10, 3, 3, 32, 32) and te[1]["label"] == 1
    # the folder dataset reads train/<class>/ and test/<class>/ from the prepared folder's keys
    fold = DataConfig(dataset="folder", splits=str(tmp_path / "p"), **base)
    tr = build_dataset(fold, "train", ["flow"], 2)
    assert tr.classes == ["run", "walk"] and sorted(zip(tr.videos, tr.labels, strict=True)) == [("train/run/v2", 0),
                                                                                   ("train/walk/v1", 1)]
    assert tr[0]["flow"].shape == (3, 4, 32, 32)


@needs_shared
def test_hmdb51_fake_tree(tmp_path):
    out = tmp_path / "splits"
    out.mkdir()
    for cls in ("brush_hair", "wave"):
        lines = (HMDB / f"{cls}_test_split1.txt").read_bytes().split(b"\n")
        kept = [x for x in lines if x.endswith(b" 1 ")][:2] + [x for x in lines if x.endswith(b" 2 ")][:1]
        kept += [x for x in lines if x.endswith(b" 0 ")][:1]
        (out / f"{cls}_test_split1.txt").write_bytes(b"".join(x + b"\n" for x in kept))
    s = load_split("hmdb51", out, 1)
    write_prepared(tmp_path / "p", {r.key: 6 for r in s.train + s.test})
    cfg = DataConfig(dataset="hmdb51", root=str(tmp_path / "p"), splits=str(out), frames=2, scale_size=H, crop_size=32)
    ds = build_dataset(cfg, "train", ["rgb", "flow"], 5)
    assert ds.classes == ["brush_hair", "wave"] and ds.labels == [0, 0, 1, 1]
    assert ds.videos[2].startswith("wave/") and not ds.videos[2].endswith(".avi")
    batch = next(iter(build_loader(ds, 4, train=True, workers=0)))
    assert batch["rgb"].shape == (4, 2, 3, 32, 32) and batch["flow"].shape == (4, 2, 10, 32, 32)


@needs_shared
def test_data_info_on_real_splits(capsys):
    assert cli_main(["data-info", "--dataset", "ucf101", "--splits", str(UCF), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(s["split"], s["train"], s["test"]) for s in report["splits"]] == [(1, 9537, 3783), (2, 9586, 3734),
                                                                               (3, 9624, 3696)]
    assert len(report["classes"]) == 101 and all(s["overlap"] == [] for s in report["splits"])
    assert sum(report["splits"][0]["per_class"]["train"]) == 9537
    assert cli_main(["data-info", "--dataset", "hmdb51", "--splits", str(HMDB), "--split", "2"]) == 0
    text = capsys.readouterr().out
    assert "51 classes" in text and "3570   1530" in text and "70-70 / 30-30" in text


@needs_shared
def test_data_info_reports_missing_and_failed(ucf_tree, tmp_path, capsys):
    cfg, videos = ucf_tree
    manifest = json.loads((Path(cfg.root) / "manifest.json").read_text())
    del manifest["videos"]["Archery/v_Archery_g01_c01"]
    manifest["videos"]["YoYo/v_YoYo_g08_c01"].update(status="failed", error="truncated file")
    (Path(cfg.root) / "manifest.json").write_text(json.dumps(manifest))
    args = ["data-info", "--dataset", "ucf101", "--splits", cfg.splits, "--root", cfg.root]
    assert cli_main(args + ["--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    prepared = report["splits"][0]["prepared"]
    assert prepared["test"]["missing"] == ["Archery/v_Archery_g01_c01"] and prepared["test"]["usable"] == 5
    assert prepared["train"]["failed"] == [{"video": "YoYo/v_YoYo_g08_c01", "error": "truncated file"}]
    assert cli_main(args) == 1
    text = capsys.readouterr().out
    assert "split 1 test: 5 of 6 usable; 1 missing: Archery/v_Archery_g01_c01" in text
    assert "YoYo/v_YoYo_g08_c01 (truncated file)" in text
    assert cli_main(["data-info", "--dataset", "ucf101", "--splits", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_last_training_batch_of_one_video_is_dropped() -> None:
    """BatchNorm1d cannot normalise a batch of one in training (Temporal-Inception's and TS-LSTM's heads):
    9537 UCF101 videos in batches of 16 leave one."""
    from stfn.data.datasets import build_loader

    class Items(torch.utils.data.Dataset):
        def __init__(self, n: int) -> None:
            self.n = n

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, item):
            return {"index": item[0] if isinstance(item, tuple) else item}

    assert [len(b["index"]) for b in build_loader(Items(17), 4, train=True, workers=0)] == [4, 4, 4, 4]
    assert [len(b["index"]) for b in build_loader(Items(18), 4, train=True, workers=0)] == [4, 4, 4, 4, 2]
    assert [len(b["index"]) for b in build_loader(Items(17), 4, train=False, workers=0)] == [4, 4, 4, 4, 1]
    assert [len(b["index"]) for b in build_loader(Items(1), 4, train=True, workers=0)] == [1]


class _Indices(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, item):
        return {"index": item[0]}


def test_a_loader_pass_leaves_the_global_rng_alone() -> None:
    """Issue 17 item 1: the base seed of the loader's workers comes from the loader's own generator,
    not from the global torch RNG that dropout draws from (persistent workers draw it once per run, so a
    resumed run would otherwise see a shifted dropout stream)."""
    loader = build_loader(_Indices(), 2, train=True, workers=0, seed=3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert sum(len(b["index"]) for b in loader) == 6
    assert torch.equal(torch.get_rng_state(), before)
    assert loader.generator is not None
