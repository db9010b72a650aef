"""The prepare manifest's video listing and keys: find_videos, canonical_key, load_manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stfn.data.prepare.manifest import canonical_key, find_videos, load_manifest, load_prepared_manifest
from stfn.errors import StfnError


def test_find_videos_rejects_clashing_keys(video_factory, tmp_path: Path) -> None:
    video_factory("A/x.mp4", n=3)
    video_factory("A/x.avi", n=3, codec="mpeg4")
    with pytest.raises(StfnError, match="share the output folder"):
        find_videos(tmp_path / "videos")
    root, found = find_videos(tmp_path / "videos", extensions=("mp4",))
    assert found == [("A/x", "A/x.mp4")]


def test_canonical_key():
    assert canonical_key("ApplyEyeMakeup/v_x_g01_c01.avi") == "ApplyEyeMakeup/v_x_g01_c01"
    assert canonical_key("./a\\b/c.MP4\r") == "a/b/c"
    assert canonical_key("rawframes/a/b/") == "rawframes/a/b"
    assert canonical_key("a/b.name.with.dots") == "a/b.name.with.dots"  # not a video extension
    assert canonical_key("/abs/x.avi") == "" and canonical_key("../x.avi") == "" and canonical_key("  ") == ""


def test_load_manifest_merges_shards_and_rejects_mixed_settings(tmp_path: Path) -> None:
    flow, resize = {"algorithm": "dis", "preset": "fast", "bound": 8.0}, {"short_side": 24}
    ok = {"source": "a.mp4", "status": "ok", "frames": 3, "flows": 2, "width": 32, "height": 24, "fps": 25.0,
          "error": None}
    failed = {**ok, "status": "failed", "frames": 0, "flows": 0, "error": "corrupt"}
    shard = {"version": 1, "flow": flow, "resize": resize}
    (tmp_path / "manifest-shard0of2.json").write_text(json.dumps({**shard, "videos": {"b": ok, "a": failed}}))
    (tmp_path / "manifest-shard1of2.json").write_text(json.dumps({**shard, "videos": {"a": ok}}))
    m = load_manifest(tmp_path)
    assert list(m.videos) == ["a", "b"] and m.videos["a"]["status"] == "ok"  # ok wins over failed
    assert (m.flow, m.resize, m.flow_bound, list(m.ok())) == (flow, resize, 8.0, ["a", "b"])
    (tmp_path / "manifest-shard1of2.json").write_text(json.dumps({**shard, "resize": {}, "videos": {}}))
    with pytest.raises(StfnError, match="other flow/resize/format settings"):
        load_manifest(tmp_path)
    (tmp_path / "manifest-shard1of2.json").write_text(json.dumps({**shard, "format": "packed", "videos": {}}))
    with pytest.raises(StfnError, match="manifest-shard1of2.json' was prepared with other flow/resize/format"):
        load_manifest(tmp_path)  # one shard packed, the other rawframes
    (tmp_path / "manifest-shard1of2.json").write_text(json.dumps({**shard, "format": "tar", "videos": {}}))
    with pytest.raises(StfnError, match="names an unknown storage format 'tar'"):
        load_manifest(tmp_path)
    (tmp_path / "manifest-shard1of2.json").write_text("{}")
    with pytest.raises(StfnError, match="not a valid stfn manifest"):
        load_manifest(tmp_path)
    with pytest.raises(StfnError, match="prepared folder .* does not exist"):
        load_prepared_manifest(tmp_path / "nowhere")
    with pytest.raises(StfnError, match="no manifest.json"):
        load_manifest(tmp_path / "nowhere")
