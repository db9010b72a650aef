"""Browse a prepared data set (``stfn serve --prepared DIR``): per video the manifest's record, the
files actually on disk, and frames and flow side by side, to catch a broken flow export before a long
training run.

Only manifest keys are accepted, and every file read is checked to lie inside the prepared folder, so
no request can name another path on the server. Both storage formats are served (rawframes files or a
packed file per video: :mod:`stfn.data.prepare.packed`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stfn.data.prepare.manifest import Manifest, load_prepared_manifest
from stfn.data.prepare.packed import open_store
from stfn.data.sampling import segment_positions
from stfn.data.video.flow import dequantize_flow, flow_to_color
from stfn.errors import StfnError

__all__ = ["NotFound", "PreparedSet"]

SHOWN_POSITIONS = 8


class NotFound(StfnError):
    """A key, frame or file the prepared folder does not have (the API answers 404)."""


class PreparedSet:
    """The manifest of a prepared folder, and its frames and flow as JPEG bytes."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.manifest: Manifest = load_prepared_manifest(root)
        self.root = Path(root).resolve()
        self.store = open_store(self.root, self.manifest.format)

    def summary(self) -> dict[str, Any]:
        """``{"root", "flow", "resize", "counts": {"ok", "failed"}, "videos": [{"key", record...}]}``."""
        videos = [{"key": k, **{f: r.get(f) for f in ("source", "status", "frames", "flows", "width", "height",
                                                       "fps", "error")}} for k, r in self.manifest.videos.items()]
        ok = sum(v["status"] == "ok" for v in videos)
        return {"root": self.root.name, "flow": self.manifest.flow, "resize": self.manifest.resize,
                "format": self.manifest.format, "counts": {"ok": ok, "failed": len(videos) - ok}, "videos": videos}

    def _folder(self, key: str) -> Path:
        """The video's folder (rawframes) or packed file, resolved, when it lies inside the prepared folder."""
        if key not in self.manifest.videos:
            raise NotFound(f"no video '{key}' in the manifest of '{self.root.name}'")
        folder = self.store.location(key).resolve()
        if not folder.is_relative_to(self.root):
            raise NotFound(f"video '{key}' lies outside the prepared folder")
        return folder

    def _found(self, key: str, folder: Path) -> tuple[dict[str, int], list[str]]:
        """Frame and flow images on disk (a pack's header counts), and what is wrong with a pack."""
        found = {"frames": 0, "flow_x": 0, "flow_y": 0}
        if self.manifest.format == "packed":
            try:
                n, m = self.store.counts(key)
            except StfnError as e:
                return found, [str(e)]
            return {"frames": n, "flow_x": m, "flow_y": m}, []
        if folder.is_dir():
            for f in os.scandir(folder):
                for kind, prefix in (("frames", "img_"), ("flow_x", "flow_x_"), ("flow_y", "flow_y_")):
                    if f.name.startswith(prefix) and f.name.endswith(".jpg"):
                        found[kind] += 1
        return found, []

    def video(self, key: str) -> dict[str, Any]:
        """One video: its record, the frame and flow files found on disk, and up to 8 positions to show
        (segment centres, 0-based; flow position ``p`` is the field from frame ``p`` to ``p + 1``)."""
        folder = self._folder(key)
        record = dict(self.manifest.videos[key])
        found, problems = self._found(key, folder)
        frames = int(record.get("frames") or 0)
        positions = segment_positions(frames, min(SHOWN_POSITIONS, frames), train=False) if frames else []
        flows = int(record.get("flows") or 0)
        if record.get("status") == "ok" and not problems:
            if found["frames"] != frames:
                problems.append(f"{found['frames']} frame files on disk, the manifest says {frames}")
            for axis in ("flow_x", "flow_y"):
                if found[axis] != flows:
                    problems.append(f"{found[axis]} {axis} files on disk, the manifest says {flows}")
        return {"key": key, **record, "files": found, "problems": problems, "positions": positions,
                "flow_positions": [min(p, flows - 1) for p in positions] if flows else []}

    def _file(self, key: str, name: str) -> Path:
        """``key/name`` in the prepared folder, resolved: a file, or a symlink to one, that lies inside it."""
        path = (self._folder(key) / name).resolve()
        if not path.is_relative_to(self.root):  # a symlink out of the folder (to /etc/passwd, say)
            raise NotFound(f"'{key}/{name}' lies outside the prepared folder")
        if not path.is_file():
            raise NotFound(f"'{key}/{name}' is missing from the prepared folder")
        return path

    def _index(self, key: str, index: int, what: str) -> int:
        """``index`` when it is one of ``key``'s ``frames`` or ``flows`` in the manifest, else :class:`NotFound`."""
        count = int(self.manifest.videos[key].get(what) or 0) if key in self.manifest.videos else 0
        if not 0 <= int(index) < count:
            raise NotFound(f"'{key}' has no {what[:-1]} {index} (the manifest lists {count}, numbered from 0)")
        return int(index)

    def _images(self, key: str, frames: list[int], fields: list[int]) -> tuple[list[bytes], list[bytes]]:
        """JPEG bytes of frames and flow fields (``x, y`` per field) of ``key``, from either format."""
        self._folder(key)
        if self.manifest.format == "packed":
            try:
                return self.store.read(key, frames, fields)
            except StfnError as e:
                raise NotFound(str(e)) from None
        rgb = [self._file(key, f"img_{i + 1:05d}.jpg").read_bytes() for i in frames]
        xy = [self._file(key, f"flow_{c}_{k + 1:05d}.jpg").read_bytes() for k in fields for c in "xy"]
        return rgb, xy

    def frame_jpeg(self, key: str, index: int) -> bytes:
        """Frame ``index`` (0-based) of ``key``: the prepared JPEG's bytes as written."""
        self._folder(key)
        return self._images(key, [self._index(key, index, "frames")], [])[0][0]

    def flow_jpeg(self, key: str, index: int) -> bytes:
        """Flow field ``index`` (0-based) of ``key`` in the colour wheel (brightness: magnitude over the
        field's largest, at least 1 pixel), as JPEG bytes."""
        self._folder(key)
        index = self._index(key, index, "flows")
        planes = []
        for axis, data in zip("xy", self._images(key, [], [index])[1], strict=True):
            plane = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
            if plane is None:
                raise NotFound(f"'{key}' flow_{axis} field {index} is not a readable JPEG")
            planes.append(plane)
        if planes[0].shape != planes[1].shape:
            raise NotFound(f"flow_x and flow_y of '{key}' field {index} differ in size")
        flow = dequantize_flow(np.stack(planes, axis=-1), self.manifest.flow_bound)
        top = max(1.0, float(np.hypot(flow[..., 0], flow[..., 1]).max()))
        return encode_jpeg(flow_to_color(flow, top))


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 ``(H, W, 3)`` -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise StfnError("could not encode an image as JPEG")
    return buf.tobytes()
