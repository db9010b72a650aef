"""Rendering of synthetic scenes: per-frame object states in, RGB frames out, and their H.264 encoding.

A :class:`Scene` is fully described by plain numbers (object tracks, background parameters, camera
shake, noise seeds), so rendering is deterministic: the same scene gives the same bytes. Shapes are
drawn from signed distance functions with one-pixel anti-aliasing, so sub-pixel motion is smooth and
optical flow sees it.

Conventions: frames are ``(N, S, S, 3)`` uint8 RGB; positions are in pixels of the output frame
(``x`` to the right, ``y`` down); ``angle`` is in radians and a growing angle turns the object
clockwise on screen; ``r`` is the object's size (radius of a disk) in pixels; ``alpha`` is its
opacity in [0, 1].
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import cv2
import numpy as np

__all__ = ["Obj", "Scene", "background", "render", "reverse_scene", "write_video"]

DARK = np.array([22.0, 22.0, 22.0], dtype=np.float32)
EXTENT = {"disk": 1.0, "ellipse": 1.0, "ring": 1.0, "blob": 1.5, "square": 1.17, "cross": 1.07,
          "triangle": 1.31}  # each shape fits in a disk of radius EXTENT[shape] * r


@dataclass
class Obj:
    """One object: static look plus per-frame tracks ``x, y, r, angle, alpha`` (each ``(N,)``)."""

    role: str  # main | red | green | distractor
    shape: str  # disk square triangle cross ring ellipse blob
    texture: str  # flat stripes checker bullseye soft
    colour: tuple[float, float, float]
    colour2: tuple[float, float, float]
    x: np.ndarray
    y: np.ndarray
    r: np.ndarray
    angle: np.ndarray
    alpha: np.ndarray
    aspect: float = 1.0  # ellipse minor/major axis ratio
    period: float = 6.0  # texture period in pixels

    def reversed(self) -> Obj:
        return replace(self, x=self.x[::-1].copy(), y=self.y[::-1].copy(), r=self.r[::-1].copy(),
                       angle=self.angle[::-1].copy(), alpha=self.alpha[::-1].copy())

    def state(self, t: int) -> tuple[float, ...]:
        """The object's state in frame ``t``, rounded for comparisons: (x, y, r, angle, alpha)."""
        return tuple(round(float(v[t]), 6) for v in (self.x, self.y, self.r, self.angle, self.alpha))


@dataclass
class Scene:
    """Everything needed to render one video of ``n_frames`` frames of ``size`` x ``size`` pixels."""

    cls: str
    group: str
    size: int
    n_frames: int
    objects: list[Obj]  # drawn in order (distractors first, so they pass behind)
    background: dict  # {"kind", "seed", "colour1", "colour2", "contrast", "period", "angle"}
    shake: np.ndarray  # (N, 2) int, camera offset (dx, dy) per frame
    noise_sigma: float
    noise_seed: int
    frame_ids: np.ndarray  # (N,) int, which noise draw each frame uses (reversed with the scene)
    margin: int = 2  # canvas border that camera shake may reveal
    events: dict = field(default_factory=dict)  # class-specific timing, for the scene description

    @property
    def main(self) -> list[Obj]:
        return [o for o in self.objects if o.role != "distractor"]


def reverse_scene(scene: Scene, cls: str) -> Scene:
    """The same scene played backwards, labelled ``cls``: ``render(reverse_scene(s)) == render(s)[::-1]``."""
    n = scene.n_frames
    events = {k: (sorted(n - 1 - t for t in v) if k.endswith("frames") else v) for k, v in scene.events.items()}
    return replace(scene, cls=cls, objects=[o.reversed() for o in scene.objects],
                   shake=scene.shake[::-1].copy(), frame_ids=scene.frame_ids[::-1].copy(), events=events)


def _box(lx: np.ndarray, ly: np.ndarray, hx: float, hy: float) -> np.ndarray:
    qx, qy = np.abs(lx) - hx, np.abs(ly) - hy
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _polygon(lx: np.ndarray, ly: np.ndarray, sides: int, inradius: float, phase: float) -> np.ndarray:
    """Regular polygon as the max of its edge half-planes (exact inside, close enough for anti-aliasing)."""
    d = None
    for k in range(sides):
        phi = phase + 2.0 * math.pi * k / sides
        e = lx * math.cos(phi) + ly * math.sin(phi) - inradius
        d = e if d is None else np.maximum(d, e)
    return d


def _sdf(obj: Obj, lx: np.ndarray, ly: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance in pixels (negative inside) of the object's outline in local coordinates."""
    rho = np.hypot(lx, ly)
    if obj.shape in ("disk", "blob"):
        return rho - r
    if obj.shape == "square":
        return _box(lx, ly, 0.82 * r, 0.82 * r)
    if obj.shape == "triangle":  # circumradius 1.3 r, one vertex up
        return _polygon(lx, ly, 3, 0.65 * r, math.pi / 2)
    if obj.shape == "cross":
        return np.minimum(_box(lx, ly, r, 0.36 * r), _box(lx, ly, 0.36 * r, r))
    if obj.shape == "ring":
        return np.abs(rho - 0.72 * r) - 0.28 * r
    if obj.shape == "ellipse":
        b = r * obj.aspect
        return (np.hypot(lx / r, ly / b) - 1.0) * b
    raise ValueError(f"unknown shape '{obj.shape}'")


def _shade(obj: Obj, lx: np.ndarray, ly: np.ndarray, r: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Colour ``(h, w, 3)`` of the object's surface: texture, then a dark outline."""
    c1 = np.asarray(obj.colour, dtype=np.float32)
    c2 = np.asarray(obj.colour2, dtype=np.float32)
    if obj.texture == "stripes":
        k = np.clip(np.sin(lx * (2.0 * math.pi / obj.period)) * 2.5, -1.0, 1.0) * 0.5 + 0.5
    elif obj.texture == "checker":
        v = np.sin(lx * (math.pi / obj.period)) * np.sin(ly * (math.pi / obj.period))
        k = np.clip(v * 3.0, -1.0, 1.0) * 0.5 + 0.5
    elif obj.texture == "bullseye":
        rr = np.hypot(lx, ly)
        k = np.clip(np.abs(rr - 0.52 * r) - 0.16 * r + 0.5, 0.0, 1.0)  # 0 on the dark ring
    else:  # flat, soft
        k = None
    col = np.broadcast_to(c1, (*lx.shape, 3)) if k is None else c2 + k[..., None] * (c1 - c2)
    if obj.texture == "soft":
        return col
    inner = np.clip(-d - 1.2 + 0.5, 0.0, 1.0)[..., None]  # 0 on the 1.2 px outline
    return DARK + inner * (col - DARK)


def _draw(canvas: np.ndarray, obj: Obj, pad: int) -> None:
    """Composite ``obj`` into every frame of ``canvas`` ``(N, H, W, 3)`` whose border is ``pad`` pixels.

    All frames are shaded at once in a fixed-size window around the object, then blended in place.
    """
    frames = np.flatnonzero(obj.alpha > 0)
    if frames.size == 0:
        return
    cx, cy = obj.x[frames] + pad, obj.y[frames] + pad
    half = int(math.ceil(EXTENT[obj.shape] * float(obj.r[frames].max()) + 2.0))
    w = 2 * half + 2
    x0 = np.floor(cx).astype(np.int64) - half
    y0 = np.floor(cy).astype(np.int64) - half
    grid = np.arange(w, dtype=np.float32)
    px = (x0[:, None] + grid[None, :] - cx[:, None]).astype(np.float32)[:, None, :]  # (F, 1, w)
    py = (y0[:, None] + grid[None, :] - cy[:, None]).astype(np.float32)[:, :, None]  # (F, w, 1)
    th = obj.angle[frames]
    c = np.cos(th).astype(np.float32)[:, None, None]
    s = np.sin(th).astype(np.float32)[:, None, None]
    lx, ly = c * px + s * py, -s * px + c * py  # rotate by -angle into the object's frame: (F, w, w)
    r = obj.r[frames].astype(np.float32)[:, None, None]
    d = _sdf(obj, lx, ly, r)
    a = obj.alpha[frames].astype(np.float32)[:, None, None]
    if obj.texture == "soft":
        cov = np.exp(-2.0 * (np.hypot(lx, ly) / r) ** 2) * a
    else:
        cov = np.clip(0.5 - d, 0.0, 1.0) * a
    col = _shade(obj, lx, ly, r, d)
    h, wc = canvas.shape[1:3]
    for i, t in enumerate(frames):
        ya, xa = int(y0[i]), int(x0[i])
        yb, xb = max(ya, 0), max(xa, 0)
        ye, xe = min(ya + w, h), min(xa + w, wc)
        if yb >= ye or xb >= xe:
            continue
        region = canvas[t, yb:ye, xb:xe]
        k = cov[i, yb - ya: ye - ya, xb - xa: xe - xa, None]
        region += k * (col[i, yb - ya: ye - ya, xb - xa: xe - xa] - region)


def background(spec: dict, side: int) -> np.ndarray:
    """Static textured backdrop ``(side, side, 3)`` float32 in [0, 255] from its parameters."""
    rng = np.random.default_rng(spec["seed"])
    c1 = np.asarray(spec["colour1"], dtype=np.float32)
    c2 = np.asarray(spec["colour2"], dtype=np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    kind = spec["kind"]
    if kind in ("smooth", "grain"):
        cells = int(rng.integers(3, 8))
        low = rng.random((cells, cells), dtype=np.float32)
        k = cv2.resize(low, (side, side), interpolation=cv2.INTER_CUBIC)
        if kind == "grain":
            k = k + rng.normal(0.0, 0.12, (side, side)).astype(np.float32)
    elif kind == "stripes":
        a = spec["angle"]
        k = 0.5 + 0.5 * np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2.0 * math.pi / spec["period"]))
    elif kind == "checker":
        a = spec["angle"]
        u = (xx * math.cos(a) + yy * math.sin(a)) * (math.pi / spec["period"])
        v = (-xx * math.sin(a) + yy * math.cos(a)) * (math.pi / spec["period"])
        k = np.clip(np.sin(u) * np.sin(v) * 4.0, -1.0, 1.0) * 0.5 + 0.5
    else:
        raise ValueError(f"unknown background kind '{kind}'")
    k = 0.5 + (np.clip(k, 0.0, 1.0) - 0.5) * spec["contrast"]
    gradient = (xx * math.cos(spec["angle"]) + yy * math.sin(spec["angle"])) / side - 0.5
    img = c2 + k[..., None] * (c1 - c2) + (gradient * 30.0)[..., None]
    return np.clip(img, 0.0, 255.0).astype(np.float32)


def render(scene: Scene, clean: bool = False) -> np.ndarray:
    """Frames ``(N, S, S, 3)`` uint8 RGB of ``scene``.

    ``clean=True`` leaves out the nuisances that change from frame to frame (distractors, camera
    shake, sensor noise), keeping the background and the class objects: two videos whose clean
    frames form the same multiset show the same things, only in another order.
    """
    n, side, m = scene.n_frames, scene.size, scene.margin
    canvas = np.repeat(background(scene.background, side + 2 * m)[None], n, axis=0)
    for obj in scene.objects:
        if not (clean and obj.role == "distractor"):
            _draw(canvas, obj, m)
    if clean:
        video = canvas[:, m: m + side, m: m + side]
    else:
        video = np.empty((n, side, side, 3), dtype=np.float32)
        for t, (dx, dy) in enumerate(scene.shake.tolist()):
            video[t] = canvas[t, m + dy: m + dy + side, m + dx: m + dx + side]
        if scene.noise_sigma > 0:
            noise = np.random.default_rng(scene.noise_seed).standard_normal(video.shape, dtype=np.float32)
            if not np.array_equal(scene.frame_ids, np.arange(n)):
                noise = noise[scene.frame_ids]  # frame t gets the draw of frame_ids[t]
            noise *= np.float32(scene.noise_sigma)
            video += noise
    video += np.float32(0.5)  # round to nearest (video is a view of our own canvas when clean)
    return np.clip(video, 0.0, 255.0, out=video).astype(np.uint8)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, crf: int = 20) -> None:
    """Encode ``frames`` ``(N, H, W, 3)`` uint8 RGB as H.264 MP4 (yuv420p, one thread, deterministic), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            # Deterministic bytes need one thread and no macroblock tree: PyAV >= 15 defaults to automatic
            # slice threads (they override x264's "threads"), and with mbtree on, the x264 in PyAV 18's
            # wheels gave different bitstreams for the same frames in 1 of 3 encodes (measured).
            options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
            stream = container.add_stream("libx264", rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            stream.codec_context.thread_count, stream.codec_context.thread_type = 1, "NONE"
            for img in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
