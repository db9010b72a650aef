"""Evaluation: hand-computed scores over views and chunks, the overlap refusal, output files, TSN
stream fusion, several splits, and the ``stfn eval`` command."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from engine_helpers import tiny_config, use_fake_data
from torch import nn

from stfn.cli import main
from stfn.data.datasets import build_loader
from stfn.engine.checkpoint import CheckpointError
from stfn.engine.eval_result import EvalResult
from stfn.engine.evaluate import evaluate, evaluate_checkpoint, evaluate_many, fuse_predictions
from stfn.engine.metrics import compute_metrics
from stfn.engine.train import train
from stfn.errors import StfnError
from stfn.models.fusion import late_fusion

TABLE = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0], [2.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
LABELS = [0, 1, 1, 2, 2]


class TableVideos(torch.utils.data.Dataset):
    """Test items whose pixels hold ``video + 100 * view``: ``rgb (V, T, 3, 2, 2)``."""

    def __init__(self, views: int, frames: int = 3) -> None:
        self.views, self.frames = views, frames
        self.videos = [f"v{i}" for i in range(len(LABELS))]

    def __len__(self) -> int:
        return len(LABELS)

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item
        rgb = torch.stack([torch.full((self.frames, 3, 2, 2), float(index + 100 * v)) for v in range(self.views)])
        return {"rgb": rgb, "label": LABELS[index], "index": index, "video": self.videos[index]}


class TableModel(nn.Module):
    """Logits ``TABLE[video] + (view - mean view) * d``: the mean over views is exactly ``TABLE[video]``."""

    def __init__(self, views: int) -> None:
        super().__init__()
        self.views = views
        self.clips_seen: list[int] = []

    def forward_features(self, batch):
        self.clips_seen.append(batch["rgb"].shape[0])
        return {"rgb_feat": batch["rgb"].flatten(2)}

    def forward_head(self, feats):
        code = feats["rgb_feat"][:, 0, 0].round().long()
        video, view = code % 100, code // 100
        d = torch.tensor([1.0, -2.0, 0.5])
        return TABLE[video] + (view.float() - (self.views - 1) / 2)[:, None] * d


@pytest.mark.parametrize("views,chunk_frames", [(1, 256), (3, 256), (3, 3), (10, 7)])
def test_evaluate_averages_views_in_chunks(views: int, chunk_frames: int) -> None:
    model = TableModel(views)
    loader = build_loader(TableVideos(views), batch_size=2, train=False, workers=0)
    out = evaluate(model, loader, torch.device("cpu"), chunk_frames=chunk_frames)
    expected = compute_metrics(TABLE, torch.tensor(LABELS), 3)
    # argmax per video: 0, 1, 2, 0, 2 -> right, right, wrong, wrong, right
    assert out["top1"] == pytest.approx(60.0) == expected["top1"]
    assert out["mean_class_acc"] == pytest.approx((100 + 50 + 50) / 3)
    assert out["confusion"] == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert [p["video"] for p in out["predictions"]] == [f"v{i}" for i in range(5)]
    for p, row in zip(out["predictions"], TABLE, strict=True):
        assert p["scores"] == pytest.approx(row.tolist(), abs=1e-5)
    assert max(model.clips_seen) <= max(1, chunk_frames // 3)  # never more frames at once than asked


def test_overlap_refusal_and_output_files(tmp_path, fake_data) -> None:
    cfg = tiny_config(epochs=1)
    cfg.train.eval_every = 0
    train(cfg, tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "last.pt"
    with pytest.raises(StfnError, match=r"last\.pt' was trained on 8 of the 8 test videos of split 2 "
                                        r"\(e\.g\. 'class\d/v_\d+'\): evaluate it on the split it was trained for"):
        evaluate_checkpoint(ckpt, split=2)
    out = tmp_path / "eval"
    r = evaluate_checkpoint(ckpt, views=3, out_dir=out, progress=False)
    assert isinstance(r, EvalResult) and r.split == 1 and r.views == 3 and r.n == 8
    assert sorted(p["video"] for p in r.predictions) == sorted(fake_data()(cfg, "test").videos)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary == {k: v for k, v in r.to_dict().items() if k != "predictions"}  # metrics.json: to_dict()
    assert summary["top1"] == r.top1 and "predictions" not in summary
    assert len(list(csv.DictReader((out / "per_class.csv").open()))) == 4
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 8 and sum(int(x["correct"]) for x in rows) == round(r.top1 * 8 / 100)
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_classes_that_do_not_match_are_refused(tmp_path, fake_data, monkeypatch) -> None:
    cfg = tiny_config(epochs=1)
    cfg.train.eval_every = 0
    train(cfg, tmp_path / "run", progress=False)
    use_fake_data(monkeypatch, fake_data(classes=5))
    with pytest.raises(CheckpointError, match=r"knows 4 classes but the test set of split 1 has 5"):
        evaluate_checkpoint(tmp_path / "run" / "last.pt")


def test_tsn_streams_fusion_of_two_checkpoints_and_mean_over_splits(tmp_path, fake_data, capsys) -> None:
    paths = {}
    for stream in ("rgb", "flow"):
        cfg = tiny_config(streams=[stream], epochs=1)
        cfg.model.arch = "tsn"
        cfg.train.eval_every = 0
        train(cfg, tmp_path / stream, progress=False)
        paths[stream] = str(tmp_path / stream / "last.pt")
    report = evaluate_many([paths["rgb"], paths["flow"]], out_dir=tmp_path / "eval", progress=False)
    assert [r["model_streams"] for r in report["results"]] == [["rgb"], ["flow"]]
    (fused,) = report["fused"]
    assert fused["weights"] == [1.0, 1.5] and set(fused["streams"]) == {"rgb", "flow"}
    per = {}
    for name in ("rgb", "flow"):
        rows = list(csv.DictReader((tmp_path / "eval" / f"{name}_last_split1" / "predictions.csv").open()))
        per[name] = torch.tensor([json.loads(x["scores"]) for x in rows])
        labels = torch.tensor([int(x["label"]) for x in rows])
    by_hand = compute_metrics(late_fusion([per["rgb"], per["flow"]], [1.0, 1.5]), labels, 4)
    assert fused["top1"] == pytest.approx(by_hand["top1"])
    assert report["splits"][1]["checkpoints"] == [paths["rgb"], paths["flow"]]
    assert (tmp_path / "eval" / "eval_fused_split1" / "confusion.png").is_file()

    # one two-stream TSN checkpoint reports each stream alone next to the fused scores
    two = tiny_config(epochs=1, streams=["rgb", "flow"])
    two.model.arch = "tsn"
    two.data.split = 2
    two.train.eval_every = 0
    train(two, tmp_path / "two", progress=False)
    r = evaluate_checkpoint(tmp_path / "two" / "last.pt", progress=False)
    assert set(r.streams) == {"rgb", "flow"}
    p = r.predictions[0]
    refused = late_fusion([torch.tensor([p["stream_scores"]["rgb"]]), torch.tensor([p["stream_scores"]["flow"]])],
                          [1.0, 1.5])
    assert torch.allclose(refused[0], torch.tensor(p["scores"]), atol=1e-4)  # the model fuses like TSN

    # `stfn eval` with one checkpoint per split: each split and the mean
    code = main(["eval", paths["rgb"], str(tmp_path / "two" / "last.pt"), "--split", "1", "2", "--no-progress",
                 "--out", str(tmp_path / "cli"), "--json", str(tmp_path / "cli.json")])
    assert code == 0
    text = capsys.readouterr().out
    assert "mean over splits 1, 2" in text and "rgb stream alone" in text
    report = json.loads((tmp_path / "cli.json").read_text())
    tops = [report["splits"][s]["top1"] for s in ("1", "2")]
    assert report["mean"]["top1"] == pytest.approx(sum(tops) / 2)
    assert main(["eval", paths["rgb"], "--split", "2", "--no-progress"]) == 2  # overlap: one sentence, exit 2
    assert "was trained on" in capsys.readouterr().err


def _row(index: int, video: str, label: int, scores: list[float]) -> dict:
    return {"index": index, "video": video, "label": label, "pred": 0, "scores": scores}


def test_fuse_predictions_is_tsn_late_fusion_hand_computed():
    rgb = [_row(0, "a", 0, [2.0, 0.0]), _row(1, "b", 1, [0.0, 1.0])]
    flow = [_row(1, "b", 1, [3.0, 0.0]), _row(0, "a", 0, [0.0, 0.0])]  # another order: matched by video
    for rule in ("logits", "softmax"):
        fused = fuse_predictions({"rgb": rgb, "flow": flow}, weights=(1.0, 1.5), rule=rule)
        assert [(p["index"], p["video"], p["label"]) for p in fused] == [(0, "a", 0), (1, "b", 1)]  # rgb's order
        for p, r, f in zip(fused, rgb, sorted(flow, key=lambda q: q["index"]), strict=True):
            lr, lf = torch.tensor(r["scores"]), torch.tensor(f["scores"])
            if rule == "logits":  # TSN: weighted sum of the logits (here / the sum of the weights)
                expected = (lr + 1.5 * lf) / 2.5
            else:
                expected = ((lr.softmax(0) + 1.5 * lf.softmax(0)) / 2.5).log()
            assert torch.allclose(torch.tensor(p["scores"]), expected, atol=1e-6)
            assert p["pred"] == int(expected.argmax())
            assert p["stream_scores"] == {"rgb": r["scores"], "flow": f["scores"]}
        # video b: rgb prefers class 1, flow class 0 with the larger weight: both rules pick 0
        assert fused[1]["pred"] == 0


def test_fuse_predictions_refuses_different_videos():
    with pytest.raises(StfnError, match="same test videos"):
        fuse_predictions({"rgb": [_row(0, "a", 0, [1.0])], "flow": [_row(0, "b", 0, [1.0])]}, [1.0, 1.5])
