"""The synthetic benchmark: layout, official split format, determinism, twins, nuisances, CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stfn.config import DataConfig
from stfn.data.datasets import build_dataset
from stfn.data.prepare.manifest import load_manifest
from stfn.data.prepare.run import prepare_dataset
from stfn.data.splits import load_split
from stfn.data.synthetic.generate import (
    PRESETS,
    SyntheticError,
    generate,
    load_info,
    load_scenes,
    resolve_params,
    video_entries,
)
from stfn.data.synthetic.render import render
from stfn.data.synthetic.scenes import CATALOGUE, GREEN, GROUPS, RED, build_scene, pair_base
from stfn.data.synthetic.sheet import contact_sheet

TRAIN_LINE = re.compile(r"^(?P<cls>[A-Za-z]+)/v_(?P=cls)_g(?P<g>\d\d)_c(?P<c>\d\d)\.mp4 (?P<label>\d+)$")
TEST_LINE = re.compile(r"^(?P<cls>[A-Za-z]+)/v_(?P=cls)_g(?P<g>\d\d)_c(?P<c>\d\d)\.mp4$")


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of the luma of two ``(N, H, W, 3)`` RGB videos (H.264 keeps luma at full resolution)."""
    n = min(len(a), len(b))
    ya, yb = (np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in v[:n]]).astype(np.float64) for v in (a, b))
    return float(10 * np.log10(255.0**2 / max(np.mean((ya - yb) ** 2), 1e-12)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    info = generate(root, "tiny", seed=0)
    assert info.generated == len(list(video_entries(info.params)))
    return root


def _lines(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.endswith(b"\r\n"), f"{path.name} must end with CRLF"
    assert data.count(b"\n") == data.count(b"\r\n"), f"{path.name} has a bare LF"
    return data.decode().split("\r\n")[:-1]


def test_layout_and_official_split_format(tiny: Path) -> None:
    p = PRESETS["tiny"]
    classes = _lines(tiny / "splits" / "classInd.txt")
    assert classes == [f"{i + 1} {name}" for i, name in enumerate(p["classes"])]
    index = {name: i + 1 for i, name in enumerate(p["classes"])}
    train, test = _lines(tiny / "splits" / "trainlist01.txt"), _lines(tiny / "splits" / "testlist01.txt")
    groups: dict[str, dict[str, set]] = {n: {"train": set(), "test": set()} for n in p["classes"]}
    listed = set()
    for line in train:
        m = TRAIN_LINE.match(line)
        assert m, line
        assert int(m["label"]) == index[m["cls"]]
        groups[m["cls"]]["train"].add(int(m["g"]))
        listed.add(line.split()[0])
    for line in test:
        m = TEST_LINE.match(line)
        assert m, f"test lines hold only the path: {line!r}"
        groups[m["cls"]]["test"].add(int(m["g"]))
        listed.add(line)
    for name in p["classes"]:  # the documented counts, and no group on both sides (UCF101 rule)
        assert sum(line.startswith(name + "/") for line in train) == p["train_per_class"]
        assert sum(line.startswith(name + "/") for line in test) == p["test_per_class"]
        assert not groups[name]["train"] & groups[name]["test"]
    on_disk = {str(f.relative_to(tiny / "videos")) for f in (tiny / "videos").rglob("*.mp4")}
    assert on_disk == listed
    assert not list(tiny.rglob("*.tmp")) and not (tiny / ".synth-pending.json").exists()

    meta = json.loads((tiny / "classes.json").read_text())
    assert (meta["preset"], meta["seed"]) == ("tiny", 0)
    assert [c["name"] for c in meta["classes"]] == p["classes"]
    assert {c["group"] for c in meta["classes"]} == set(GROUPS)
    assert all(c["description"] for c in meta["classes"])
    assert 2 <= meta["flow_bound"] <= 20
    info = load_info(tiny)
    assert info.counts["Square"] == {"train": p["train_per_class"], "test": p["test_per_class"]}


def test_splits_parse_with_the_ucf101_parser(tiny: Path) -> None:
    split = load_split("synthetic", tiny / "splits", 1)
    p = PRESETS["tiny"]
    assert split.classes == p["classes"]
    assert len(split.train) == len(p["classes"]) * p["train_per_class"]
    assert len(split.test) == len(p["classes"]) * p["test_per_class"]
    for rec in split.train + split.test:
        assert rec.key.split("/")[0] == split.classes[rec.label]
        assert (tiny / "videos" / f"{rec.key}.mp4").is_file()
    assert not {r.key for r in split.train} & {r.key for r in split.test}


def test_prepare_and_dataset_read_it_unchanged(tiny: Path, tmp_path: Path) -> None:
    """``stfn prepare`` on videos/ and the ``synthetic`` dataset on splits/: documented shapes."""
    bound = load_info(tiny).flow_bound
    prepare_dataset(tiny / "videos", tmp_path / "prep", flow="dis", bound=bound, workers=1, progress=False)
    manifest = load_manifest(tmp_path / "prep")
    assert manifest.flow_bound == bound
    frames = {r["video"]: r["frames"] for r in load_scenes(tiny)}
    assert {k: v["frames"] for k, v in manifest.videos.items()} == frames
    cfg = DataConfig(dataset="synthetic", root=str(tmp_path / "prep"), splits=str(tiny / "splits"), frames=4,
                     scale_size=32, crop_size=32, num_workers=0)
    ds = build_dataset(cfg, "train", ["rgb", "flow"], flow_length=5)
    assert ds.classes == PRESETS["tiny"]["classes"] and len(ds) == 8 * PRESETS["tiny"]["train_per_class"]
    item = ds[0]
    assert item["rgb"].shape == (4, 3, 32, 32) and item["flow"].shape == (4, 10, 32, 32)
    assert ds.classes[item["label"]] == item["video"].split("/")[0]


def test_videos_decode_to_their_scenes(tiny: Path) -> None:
    scenes = load_scenes(tiny)
    assert len(scenes) == sum(len(_lines(tiny / "splits" / f)) for f in ("trainlist01.txt", "testlist01.txt"))
    p = load_info(tiny).params
    for rec in scenes[::3]:
        frames = decode(tiny / "videos" / f"{rec['video']}.mp4")
        assert frames.shape == (rec["frames"], p["size"], p["size"], 3)
        g, c = (int(v) for v in re.findall(r"_g(\d+)_c(\d+)$", rec["video"])[0])
        rendered = render(build_scene(rec["class"], p, [0, g, c]))
        elsewhere = render(build_scene(rec["class"], p, [0, g + 10, c]))
        assert psnr(frames, rendered) > 30.0, rec["video"]  # H.264 at crf 20 of the described scene
        assert psnr(frames, elsewhere) < psnr(frames, rendered) - 6.0


def test_same_seed_same_frames_other_seed_other_frames(tiny: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", "tiny", seed=0)
    other = generate(tmp_path / "other", "tiny", seed=1)
    for rec in load_scenes(tiny):
        a = decode(tiny / "videos" / f"{rec['video']}.mp4")
        b = decode(again.videos_dir / f"{rec['video']}.mp4")
        assert np.array_equal(a, b), rec["video"]
    first = load_scenes(tiny)[0]["video"]
    a, c = decode(tiny / "videos" / f"{first}.mp4"), decode(other.videos_dir / f"{first}.mp4")
    assert a.shape != c.shape or psnr(a, c) < 25.0
    assert load_scenes(tiny) != load_scenes(other.root)


def _twins(scenes: list[dict], relation: str) -> list[tuple[dict, dict]]:
    by_video = {r["video"]: r for r in scenes}
    pairs = []
    for r in scenes:
        spec = CATALOGUE[r["class"]]
        if spec.relation == relation and spec.name < spec.twin:
            twin = r["video"].replace(spec.name, spec.twin)
            pairs.append((r, by_video[twin]))
    return pairs


def _states(rec: dict) -> list[tuple]:
    """Per-frame states of the class objects: [(x, y, r, angle, alpha) per object] per frame."""
    keys = ("x", "y", "r", "angle", "alpha")
    return [tuple(tuple(o[k][t] for k in keys) for o in rec["objects"]) for t in range(rec["frames"])]


def _field_windows(rec: dict, length: int) -> Counter:
    """Multiset of the per-field state changes seen by every flow stack of ``length`` fields."""
    states = np.array(_states(rec), dtype=np.float64).reshape(rec["frames"], -1)
    delta = np.round(np.diff(states, axis=0), 3)
    return Counter(tuple(map(tuple, delta[k: k + length])) for k in range(len(delta) - length + 1))


@pytest.mark.parametrize("seed", [0, 7])
def test_temporal_order_twins_hold_the_same_frames_in_another_order(seed: int) -> None:
    """The pair's twins: the same multiset of frames (up to noise) and of flow stacks; only the order differs."""
    p = resolve_params("small")
    L = p["still_gap"]
    for a_name, b_name in (("LeftThenRight", "RightThenLeft"), ("AppearThenVanish", "VanishThenAppear"),
                           ("GrowThenShrink", "ShrinkThenGrow")):
        for g in range(1, 4):
            a, b = build_scene(a_name, p, [seed, g, 1]), build_scene(b_name, p, [seed, g, 1])
            sa = [a.main[0].state(t) for t in range(a.n_frames)]
            sb = [b.main[0].state(t) for t in range(b.n_frames)]
            assert sorted(sa) == sorted(sb) and sa != sb
            fa, fb = render(a, clean=True), render(b, clean=True)  # pixel-exact without the nuisances
            assert sorted(f.tobytes() for f in fa) == sorted(f.tobytes() for f in fb)
            assert not np.array_equal(fa, fb)
            ra = {"frames": a.n_frames, "objects": [{k: getattr(a.main[0], k).tolist() for k in
                                                     ("x", "y", "r", "angle", "alpha")}]}
            rb = {"frames": b.n_frames, "objects": [{k: getattr(b.main[0], k).tolist() for k in
                                                     ("x", "y", "r", "angle", "alpha")}]}
            assert _field_windows(ra, L) == _field_windows(rb, L)  # what TSN's flow stacks can see
            # the object is still except for two events, with >= L still fields around them
            moving = np.any(np.abs(np.diff(np.array(sa), axis=0)) > 1e-9, axis=1)
            runs = [len(r) for r in "".join("m" if v else "s" for v in moving).split("m") if r]
            assert len(runs) == 3 and min(runs) >= L and runs[1] == runs[0] + runs[2] + 1
            assert a.n_frames % 2 == 0


def test_twins_in_the_generated_data(tiny: Path) -> None:
    scenes = load_scenes(tiny)
    swaps, reverses = _twins(scenes, "swap"), _twins(scenes, "reverse")
    assert swaps and reverses
    for a, b in swaps:
        assert sorted(_states(a)) == sorted(_states(b)) and _states(a) != _states(b)
    for a, b in reverses:  # mirror motions and the binding pairs: the same video played backwards
        assert _states(a)[::-1] == _states(b)
        fa = decode(tiny / "videos" / f"{a['video']}.mp4")
        fb = decode(tiny / "videos" / f"{b['video']}.mp4")
        assert psnr(fa[::-1], fb) > 30.0


def test_motion_group_frames_share_one_distribution() -> None:
    """Single frames of the motion classes: same distribution of position, size and orientation."""
    p = resolve_params("small")
    stats = {}
    for name in ("SlideRight", "SlideLeft", "SpinClockwise", "Grow"):
        x, r, th = [], [], []
        for g in range(300):
            o = build_scene(name, p, [3, g, 1]).main[0]
            x += list(o.x)
            r += list(o.r)
            th += list(np.mod(o.angle, np.pi))
        stats[name] = [np.quantile(v, [0.1, 0.5, 0.9]) for v in (x, r, th)]
    ref = stats["SlideRight"]
    for name, st in stats.items():
        for q, q_ref, tol in zip(st, ref, (2.0, 0.4, 0.2), strict=True):
            assert np.all(np.abs(q - q_ref) < tol), name
    s = build_scene("SlideRight", p, [0, 1, 1]).main[0]
    assert s.x[-1] > s.x[0] and np.ptp(s.r) == 0 and np.ptp(s.angle) == 0
    s = build_scene("SpinClockwise", p, [0, 1, 1]).main[0]
    assert s.angle[-1] > s.angle[0] and np.ptp(s.x) == 0


def test_binding_colours_look_alike_to_flow() -> None:
    """Flow runs on grayscale: the red and the green object must have the same luma."""
    pix = np.array([[RED, GREEN]], dtype=np.uint8)
    gray = cv2.cvtColor(pix, cv2.COLOR_RGB2GRAY)
    assert abs(int(gray[0, 0]) - int(gray[0, 1])) <= 1
    scene = build_scene("RedLeftGreenRight", resolve_params("small"), [0, 1, 1])
    red, green = (next(o for o in scene.main if o.role == role) for role in ("red", "green"))
    assert red.x[-1] < red.x[0] and green.x[-1] > green.x[0]
    assert (red.y[0] < 32) != (green.y[0] < 32)  # one in each half


def test_binding_is_the_xor_of_what_each_stream_is_taught() -> None:
    """RedLeftGreenRight <=> (red is upper) == (upper goes left); each half alone is a coin flip, and is
    the label of a single-stream pair (RedAboveGreen: one frame, TopLeftBottomRight: flow)."""
    p = resolve_params("small")
    seen = Counter()
    for g in range(80):
        for name in ("RedLeftGreenRight", "GreenLeftRedRight"):
            red, green = sorted(build_scene(name, p, [0, g, 1]).main, key=lambda o: o.role != "red")
            red_upper = red.y[0] < green.y[0]
            upper = red if red_upper else green
            upper_left = upper.x[-1] < upper.x[0]
            assert (red_upper == upper_left) == (name == "RedLeftGreenRight")
            seen[name, red_upper] += 1
    assert all(20 <= v <= 60 for v in seen.values()) and len(seen) == 4
    layout = {n: build_scene(n, p, [0, 2, 3]).main for n in ("RedAboveGreen", "GreenAboveRed")}
    for a, b in zip(layout["RedAboveGreen"], layout["GreenAboveRed"], strict=True):  # colours swapped only
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and a.role != b.role
    red = next(o for o in layout["RedAboveGreen"] if o.role == "red")
    green = next(o for o in layout["RedAboveGreen"] if o.role == "green")
    assert np.all(red.y < 32) and np.all(green.y > 32) and np.ptp(red.x) + np.ptp(red.y) > 0
    upper, lower = build_scene("TopLeftBottomRight", p, [0, 2, 3]).main
    assert upper.x[-1] < upper.x[0] and lower.x[-1] > lower.x[0] and upper.colour == lower.colour


def test_nuisances_are_balanced_across_classes() -> None:
    """Same group and clip number: same backdrop, colour, distractors, shake, noise in every class,
    so none of them can stand in for the label; another clip number draws new ones."""
    p = resolve_params("small")
    scenes = [build_scene(name, p, [0, 4, 2]) for name in p["classes"]]
    ref = scenes[0]
    for s in scenes[1:]:
        assert s.background == ref.background and s.noise_seed == ref.noise_seed
        reversed_twin = CATALOGUE[s.cls].relation == "reverse" and pair_base(s.cls) != s.cls
        shake = s.shake[::-1] if reversed_twin else s.shake
        assert np.array_equal(shake, ref.shake) or s.n_frames != ref.n_frames  # temporal order: even lengths
        assert len(s.objects) - len(s.main) == len(ref.objects) - len(ref.main)
        if s.main[0].role in ("main", "upper"):  # the drawn colour (red and green are fixed)
            assert s.main[0].colour == ref.main[0].colour
    squares = [build_scene("Square", p, [0, 4, c]).main[0] for c in (2, 3)]
    disk = build_scene("Disk", p, [0, 4, 2]).main[0]
    assert np.array_equal(squares[0].x, disk.x) and squares[0].shape != disk.shape  # minimal pair
    assert not np.array_equal(squares[0].x, squares[1].x)
    assert build_scene("Square", p, [0, 4, 3]).background != ref.background


def test_nuisances_are_present() -> None:
    p = resolve_params("small")
    scenes = [build_scene(name, p, [0, g, 1]) for name in p["classes"] for g in range(1, 13)]
    assert len({s.n_frames for s in scenes}) > 5
    assert len({s.background["kind"] for s in scenes}) == 4
    assert any(len(s.objects) > len(s.main) for s in scenes)  # distractors
    assert any(np.abs(s.shake).max() > 0 for s in scenes)
    assert all(s.noise_sigma >= p["noise_min"] for s in scenes)
    clean, noisy = render(scenes[0], clean=True), render(scenes[0])
    assert 0.5 < np.std(noisy.astype(float) - clean) < 40


def test_resume_rewrites_only_what_is_missing(tmp_path: Path) -> None:
    kw = {"train_per_class": 1, "test_per_class": 1}
    root = tmp_path / "b"
    generate(root, "tiny", seed=0, **kw)
    victim = root / "videos" / "Square" / "v_Square_g01_c01.mp4"
    before = decode(victim)
    victim.unlink()
    (root / "classes.json").unlink()  # as if killed before the end
    info = generate(root, "tiny", seed=0, **kw)
    assert info.generated == 1 and np.array_equal(decode(victim), before)
    assert generate(root, "tiny", seed=0, **kw).generated == 0  # complete: returns at once
    with pytest.raises(SyntheticError, match="other settings"):
        generate(root, "tiny", seed=1, **kw)
    assert generate(root, "tiny", seed=1, overwrite=True, **kw).seed == 1


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"sizee": 64}, "sizee"),
    ({"size": 33}, "size"),
    ({"frames_min": 20}, "frames_min"),
    ({"classes": ["Square", "SlideLeft"]}, "SlideRight"),
    ({"classes": ["Nope"]}, "Nope"),
    ({"train_per_class": 1.5}, "train_per_class"),
])
def test_bad_parameters_name_the_key(overrides: dict, needle: str, tmp_path: Path) -> None:
    with pytest.raises(SyntheticError, match=needle):
        generate(tmp_path, "tiny", **overrides)
    with pytest.raises(SyntheticError, match="preset"):
        resolve_params("huge")


def test_bad_seed_and_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SyntheticError, match="seed"):
        generate(tmp_path / "a", "tiny", seed=-1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SyntheticError, match="is a file"):
        generate(tmp_path / "file", "tiny")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "classes.json").write_text("{not json")
    with pytest.raises(SyntheticError, match="cannot be read"):
        generate(tmp_path / "broken", "tiny")
    with pytest.raises(SyntheticError, match="does not exist"):
        load_info(tmp_path / "a")


def test_cli_synth_and_contact_sheet(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from stfn.cli import main

    png = tmp_path / "sheet.png"
    assert main(["synth", str(tmp_path / "s"), "--preset", "tiny", "--train", "1", "--test", "1",
                 "--frames", "32-34", "--no-progress", "--contact-sheet", str(png)]) == 0
    out = capsys.readouterr().out
    assert "8 classes, 8 train + 8 test videos" in out and "temporal_order" in out
    with Image.open(png) as img:
        assert img.width > 6 * 32 and img.height > 8 * 32
    assert png.stat().st_size < 300_000
    assert main(["synth", str(tmp_path / "s"), "--preset", "tiny", "--seed", "2"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert contact_sheet(tmp_path / "s", tmp_path / "again.png", frames=3).is_file()
