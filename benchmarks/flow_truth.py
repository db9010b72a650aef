"""Ground truth for optical flow: two frames of a textured image with known motion, and the end-point error.

A fixture of the flow tests (``tests/data/video/test_flow.py``, ``test_raft.py``) and of
``benchmarks/flow.py``, not of the library: :func:`synthetic_pair` makes the pair, :func:`endpoint_error`
scores an estimate against it.
"""

from __future__ import annotations

import cv2
import numpy as np

MOTIONS = ("shift", "rotate", "zoom")


def synthetic_pair(
    motion: str = "shift", size: tuple[int, int] = (320, 240), seed: int = 0, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two RGB frames of a textured image with known motion between them.

    ``motion``: ``shift`` (3.4, -2.3 px), ``rotate`` (3 degrees about the centre) or ``zoom`` (x1.05
    about the centre), each scaled by ``strength`` (3 gives up to ~25 px at 320x240). Returns ``frames (2, H, W, 3)`` uint8, ground-truth ``flow (H, W, 2)`` float32
    (frame 0 -> frame 1) and ``valid (H, W)`` bool (pixels that stay inside frame 1, 4 px margin).
    """
    w, h = size
    rng = np.random.default_rng(seed)
    big = (w + 2 * h, 3 * h)  # texture larger than the view: no border effects
    texture = np.zeros((big[1], big[0], 3), np.float32)
    for sigma, weight in ((0.7, 0.6), (2.0, 1.0), (5.0, 1.0), (12.0, 1.0)):
        noise = rng.standard_normal((big[1], big[0], 3)).astype(np.float32)
        layer = cv2.GaussianBlur(noise, (0, 0), sigma)
        texture += weight * layer / (layer.std() + 1e-6)
    texture = np.clip(128 + 28 * texture, 0, 255).astype(np.float32)
    ox, oy = (big[0] - w) / 2, (big[1] - h) / 2
    cx, cy = (w - 1) / 2, (h - 1) / 2
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    sx, sy = 3.4 * strength, -2.3 * strength
    if motion == "shift":
        tx, ty = xs + sx, ys + sy
    elif motion in ("rotate", "zoom"):
        a = np.deg2rad(3.0 * strength) if motion == "rotate" else 0.0
        s = 1.0 + 0.05 * strength if motion == "zoom" else 1.0
        dx, dy = xs - cx, ys - cy
        tx = cx + s * (np.cos(a) * dx - np.sin(a) * dy)
        ty = cy + s * (np.sin(a) * dx + np.cos(a) * dy)
    else:
        raise ValueError(f"unknown synthetic motion '{motion}' (choose {', '.join(MOTIONS)})")
    flow = np.stack([tx - xs, ty - ys], axis=-1).astype(np.float32)
    # frame 1 at q shows what frame 0 showed at T^-1(q); build the inverse map numerically exact
    if motion == "shift":
        ix, iy = xs - sx, ys - sy
    else:
        dx, dy = (xs - cx) / s, (ys - cy) / s
        ix = cx + np.cos(a) * dx + np.sin(a) * dy
        iy = cy - np.sin(a) * dx + np.cos(a) * dy
    f0 = cv2.remap(texture, xs + ox, ys + oy, cv2.INTER_CUBIC)
    f1 = cv2.remap(texture, (ix + ox).astype(np.float32), (iy + oy).astype(np.float32), cv2.INTER_CUBIC)
    frames = np.clip(np.stack([f0, f1]) + 0.5, 0, 255).astype(np.uint8)
    m = 4
    valid = (tx >= m) & (tx <= w - 1 - m) & (ty >= m) & (ty <= h - 1 - m)
    return frames, flow, valid


def endpoint_error(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean end-point error ``|pred - gt|_2`` in pixels over ``valid`` pixels (all when ``None``)."""
    err = np.linalg.norm(pred.astype(np.float64) - gt, axis=-1)
    return float(err[valid].mean() if valid is not None else err.mean())
