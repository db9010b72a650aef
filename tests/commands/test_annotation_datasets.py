"""Kinetics and Something-Something v2 through the commands: `stfn data-info`, `stfn prepare --list`,
`stfn train` and `stfn compare --dataset list` with the dataset names kinetics400/600/700 and ssv2. The
end-to-end runs lay real clips (the Weizmann footage of ../shared/realdata) out as the downloaders do
(Kinetics: CSV + `<label>/<ytid>_<start>_<end>.mp4`, one clip gone from YouTube; SSv2: JSON +
`<id>.webm`, transcoded to VP8 here) and train one tiny epoch. The readers themselves:
tests/data/test_kinetics.py and tests/data/test_ssv2.py."""

from __future__ import annotations

import json
import os

import av
import pytest

from stfn.cli import build_parser, main
from stfn.commands.train import load_run_config
from stfn.data.splits import DATASETS
from suite_helpers import REALDATA, REPO

from .command_helpers import one_sentence

TINY = str(REPO / "configs" / "tiny.yaml")
WEIZMANN = REALDATA / "weizmann" / "videos"
needs_weizmann = pytest.mark.shared("realdata/weizmann/videos/Bend/v_Bend_g01_c01.mp4")
CLASSES = {"Bend": "bending back", "JumpingJack": "jumping jacks"}  # Weizmann folder -> Kinetics-style label
HEADER = "label,youtube_id,time_start,time_end,split\n"


def kinetics_annotations(tmp_path, missing: bool = True) -> tuple:
    """A Kinetics-400 annotation folder over 2 Weizmann classes (actors 1-3 train, 7 test), plus the
    source clips per CSV line; ``missing`` adds a train clip that has no video (gone from YouTube)."""
    ann = tmp_path / "kinetics400"
    ann.mkdir()
    rows = {"train": [], "validate": []}
    for folder, label in CLASSES.items():
        for side, actors in (("train", (1, 2, 3)), ("validate", (7,))):
            rows[side] += [(label, f"{folder[:4]}{actor:02d}xxxxx", WEIZMANN / folder / f"v_{folder}_g{actor:02d}_c01.mp4")
                           for actor in actors]
    (ann / "train.csv").write_text(HEADER + "".join(f"{lb},{yt},10,20,train\n" for lb, yt, _ in rows["train"])
                                   + ("bending back,GONEFROMYT1,0,10,train\n" if missing else ""))
    (ann / "validate.csv").write_text(HEADER + "".join(f'"{lb}",{yt},10,20,val\n' for lb, yt, _ in rows["validate"]))
    return ann, rows


def test_the_dataset_names_are_known_and_listed(capsys) -> None:
    assert {"kinetics400", "kinetics600", "kinetics700", "ssv2"} <= set(DATASETS)
    with pytest.raises(SystemExit) as done:  # no VIDEOS, no --splits: the list is all it prints
        main(["compare", "--dataset", "list"])
    assert done.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [d for d in DATASETS if d != "list"]
    assert any(line.startswith("ssv2") and "<id>.webm" in line for line in lines)
    assert main(["data-info", "--dataset", "help"]) == 0  # data-info's `list` is the MMAction2 list format
    assert [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()] == list(DATASETS)


def test_train_leaves_out_missing_kinetics_clips_and_never_flips_ssv2(tmp_path, capsys) -> None:
    args = ["train", "--config", TINY, "--set", "data.dataset=kinetics400"]
    assert load_run_config(build_parser().parse_args(args)).data.on_missing == "skip"
    given = load_run_config(build_parser().parse_args([*args, "--set", "data.on_missing=error"]))
    assert given.data.on_missing == "error"  # what the user says wins
    assert load_run_config(build_parser().parse_args(["train", "--config", TINY])).data.on_missing == "error"
    cfg = load_run_config(build_parser().parse_args(["train", "--config", TINY, "--set", "data.dataset=ssv2"]))
    assert cfg.data.hflip is False and "data.hflip=false for ssv2" in capsys.readouterr().out


def test_data_info_counts_the_missing_clips(tmp_path, capsys) -> None:
    ann, rows = kinetics_annotations(tmp_path)
    root = tmp_path / "prepared"
    root.mkdir()
    videos = {f"{lb.replace(' ', '_')}/{yt}_000010_000020": {"status": "ok", "frames": 5, "flows": 4}
              for side in rows.values() for lb, yt, _ in side}
    (root / "manifest.json").write_text(json.dumps({"version": 1, "flow": {"algorithm": "dis", "bound": 20.0},
                                                    "resize": {}, "videos": videos}))
    assert main(["data-info", "--dataset", "kinetics400", "--splits", str(ann), "--root", str(root)]) == 1
    text = capsys.readouterr().out
    assert "dataset kinetics400: 2 classes (bending back, jumping jacks)" in text
    assert "split 1 train: 6 of 7 usable; 1 missing: GONEFROMYT1_000000_000010" in text
    assert "split 1 test: 2 of 2 usable" in text
    one_sentence(capsys, "data-info", ["--dataset", "ssv2", "--splits", str(tmp_path / "none")],
                 f"SSv2 annotation folder '{tmp_path / 'none'}' does not exist")
    (ann / "validate.csv").write_text("label,youtube_id,time_start,split\n")
    one_sentence(capsys, "data-info", ["--dataset", "kinetics400", "--splits", str(ann)],
                 f"{ann / 'validate.csv'}, line 1: the header has no column 'time_end'")


def _link_kinetics(tmp_path, rows) -> os.PathLike:
    """The downloaders' layout: ``<label>/<ytid>_<start:06d>_<end:06d>.mp4``, the label folder as the CSV
    writes it (spaces: ActivityNet's downloader) for the first label, underscored for the others."""
    videos = tmp_path / "videos"
    first = next(iter(rows.values()))[0][0]
    for side in rows.values():
        for label, ytid, source in side:
            dest = videos / (label if label == first else label.replace(" ", "_")) / f"{ytid}_000010_000020.mp4"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(source)
    return videos


def _tiny_train(data, splits, dataset: str, out) -> list[str]:
    return ["train", "--config", TINY, "--data", str(data), "--splits", str(splits), "--out", str(out),
            "--no-progress", "--set", f"data.dataset={dataset}", "--set", "train.epochs=1",
            "--set", "model.arch=tsn", "--set", "model.streams=[rgb]"]


@needs_weizmann
def test_kinetics_end_to_end_prepare_list_and_one_tiny_epoch(tmp_path, capsys, caplog) -> None:
    ann, rows = kinetics_annotations(tmp_path)
    videos, prepared = _link_kinetics(tmp_path, rows), tmp_path / "prepared"
    assert any(" " in p.name for p in videos.iterdir())  # a label folder with a space in its name
    assert main(["prepare", str(videos), str(prepared), "--list", str(ann / "train.csv"), "--workers", "0",
                 "--quiet", "--format", "packed"]) == 0
    out = capsys.readouterr().out
    assert f"stfn prepare: 1 of the 7 videos listed in '{ann / 'train.csv'}' are not under" in out
    assert "(first: GONEFROMYT1_000000_000010); preparing the other 6" in out
    assert main(["prepare", str(videos), str(prepared), "--workers", "0", "--quiet", "--format", "packed"]) == 0
    assert len(list(prepared.rglob("*.stfnpack"))) == 8  # the 6 listed and the 2 test clips, one file each
    assert main(_tiny_train(prepared, ann, "kinetics400", tmp_path / "run")) == 0
    # counted and left out (a warning of stfn.data: on stderr outside pytest)
    assert "1 of 7 train videos of kinetics400 split 1 are not usable" in caplog.text
    assert "1 missing from the manifest (first: GONEFROMYT1_000000_000010); skipping them" in caplog.text
    assert "best checkpoint" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "run" / "best.pt"), "--no-progress", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"][0]["split"] == 1 and report["results"][0]["top1"] is not None


def _webm(source, dest) -> None:
    """Transcode a real clip to VP8 WebM, as the SSv2 videos are stored."""
    with av.open(str(source)) as src, av.open(str(dest), "w") as out:
        stream = out.add_stream("libvpx", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for frame in src.decode(video=0):
            out.mux(stream.encode(frame.reformat(64, 64, "yuv420p")))
        out.mux(stream.encode(None))


@pytest.mark.slow
@needs_weizmann
def test_ssv2_end_to_end_webm_videos_and_one_tiny_epoch(tmp_path, capsys) -> None:
    ann, videos = tmp_path / "ssv2", tmp_path / "20bn-something-something-v2"
    ann.mkdir()
    videos.mkdir()
    templates = {"Bend": "Bending [something] so that it deforms", "JumpingJack": "Moving [something] up"}
    (ann / "something-something-v2-labels.json").write_text(json.dumps(
        {"Bending something so that it deforms": "0", "Moving something up": "1"}))
    sides: dict[str, list] = {"train": [], "validation": []}
    for n, (folder, template) in enumerate(templates.items()):
        for side, actors in (("train", (1, 2, 3)), ("validation", (7,))):
            for actor in actors:
                vid = str(1000 * (n + 1) + actor)
                _webm(WEIZMANN / folder / f"v_{folder}_g{actor:02d}_c01.mp4", videos / f"{vid}.webm")
                sides[side].append({"id": vid, "label": template.replace("[something]", "a thing"),
                                    "template": template, "placeholders": ["a thing"]})
    for side, entries in sides.items():
        (ann / f"something-something-v2-{side}.json").write_text(json.dumps(entries))
    prepared = tmp_path / "prepared"
    assert main(["prepare", str(videos), str(prepared), "--workers", "0", "--quiet", "--format", "packed"]) == 0
    assert len(list(prepared.glob("*.stfnpack"))) == 8
    assert main(["data-info", "--dataset", "ssv2", "--splits", str(ann), "--root", str(prepared)]) == 0
    assert "split 1 train: 6 of 6 usable" in capsys.readouterr().out
    assert main(_tiny_train(prepared, ann, "ssv2", tmp_path / "run")) == 0
    assert "data.hflip=false for ssv2" in capsys.readouterr().out
    best = str(tmp_path / "run" / "best.pt")
    assert main(["eval", best, "--no-progress", "--crops", "3", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["views"] == 3
    one_sentence(capsys, "eval", [best, "--no-progress", "--crops", "10"], "10 test views (data.test_crops, --crops) "
                 "hold 5 mirrored crops, which change the meaning of ssv2's left/right classes")


@pytest.mark.parametrize(("name", "classes", "crops", "flip"), [("kinetics400_tsn_rgb_resnet50", 400, 10, True),
                                                              ("ssv2_tsn_rgb_resnet50", 174, 3, False)])
def test_the_recipes_test_with_the_published_views(name, classes, crops, flip) -> None:
    """Kinetics: 10 crops (TSN; TSM's uniform protocol with --frames 8); SSv2: 3 crops, never flipped."""
    from stfn.config import load_config
    from stfn.data.splits import available_splits

    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert (cfg.data.dataset, cfg.model.num_classes, cfg.data.test_crops, cfg.data.hflip) == (
        name.split("_")[0], classes, crops, flip)
    assert available_splits(cfg.data.dataset, "anywhere") == [1]
