"""Dense optical flow between consecutive frames, and its 8-bit storage (TSN / MMAction2).

Algorithms, by name:

* ``dis`` (default): OpenCV DIS, presets ``ultrafast``/``fast``/``medium``. Fast on one CPU core.
* ``tvl1``: OpenCV-contrib Dual TV-L1, the classic choice of TSN and I3D; about 1 pair/s on a CPU core.
* ``farneback``: OpenCV Farneback.
* ``raft``: torchvision RAFT (``raft_small`` or ``raft_large``), batched, on a GPU when there is one.

Numbering: ``N`` frames give ``N - 1`` flow fields; field ``k`` (0-based) is the motion from frame ``k``
to frame ``k + 1``, in pixels, channels ``(x, y)``: ``frame[k](p) ~ frame[k + 1](p + flow[k](p))``.
``stfn prepare`` stores field ``k`` as ``flow_x_{k+1:05d}.jpg`` / ``flow_y_{k+1:05d}.jpg`` next to
``img_{k+1:05d}.jpg`` (1-based files, MMAction2 layout).

Storage: ``q = round((clip(v, -b, b) + b) * 255 / (2 b))`` as uint8, one grayscale JPEG per component;
``v = q * 2 b / 255 - b``; bound ``b`` defaults to 20. A horizontal flip of a video negates flow-x:
``q -> 255 - q`` on the flipped image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from stfn.errors import StfnError

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "DEFAULT_BOUND",
    "DEFAULT_DIS_PRESET",
    "DIS_PRESETS",
    "compute_flow",
    "create_estimator",
    "dequantize_flow",
    "quantize_flow",
]

ALGORITHMS = ("dis", "tvl1", "farneback", "raft")
DIS_PRESETS = ("ultrafast", "fast", "medium")
DEFAULT_ALGORITHM = "dis"
DEFAULT_DIS_PRESET = "fast"
DEFAULT_BOUND = 20.0

# An estimator maps frames (N, H, W, 3) uint8 RGB, or (N, H, W) uint8 gray, to flow (N-1, H, W, 2).
FlowEstimator = Callable[[np.ndarray], np.ndarray]


def quantize_flow(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Flow in pixels (any shape, float) -> uint8 of the same shape: clip to +/-bound, map to 0..255."""
    if bound <= 0:
        raise StfnError(f"flow bound must be positive, got {bound}")
    # floor((v + b) * 255 / 2b + 0.5), clipped: one multiply, in-place add and clip, truncating cast
    x = np.multiply(flow, np.float32(255.0 / (2.0 * bound)), dtype=np.float32)
    x += np.float32(127.5 + 0.5)
    np.clip(x, 0.0, 255.0, out=x)
    return x.astype(np.uint8)


def dequantize_flow(q: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """uint8 from :func:`quantize_flow` -> float32 flow in pixels (exact inverse up to half a step)."""
    if bound <= 0:
        raise StfnError(f"flow bound must be positive, got {bound}")
    return (q.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)).astype(np.float32)


def _gray(frames: np.ndarray) -> np.ndarray:
    import cv2

    if frames.ndim == 3:
        return frames
    if frames.ndim == 4 and frames.shape[-1] == 3:
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    if frames.ndim == 4 and frames.shape[-1] == 1:
        return frames[..., 0]
    raise StfnError(f"frames must be (N, H, W, 3) RGB or (N, H, W) gray, got shape {frames.shape}")


class OpenCVFlow:
    """Pairwise flow with OpenCV: ``__call__(frames (N, H, W[, 3]) uint8) -> (N-1, H, W, 2) float32``."""

    def __init__(self, algorithm: str = DEFAULT_ALGORITHM, preset: str = DEFAULT_DIS_PRESET) -> None:
        import cv2

        self.algorithm = algorithm
        if algorithm == "dis":
            if preset not in DIS_PRESETS:
                raise StfnError(f"unknown DIS preset '{preset}' (choose {', '.join(DIS_PRESETS)})")
            if not hasattr(cv2, "DISOpticalFlow_create"):
                raise StfnError(f"this OpenCV ({cv2.__version__}) has no DIS optical flow")
            code = getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}")
            self._impl = cv2.DISOpticalFlow_create(code)
            # DIS lowers its finest pyramid scale for good after a small frame; restoring it before
            # each pair keeps the flow of a frame independent of the sizes seen before it.
            self._finest_scale = self._impl.getFinestScale()
        elif algorithm == "tvl1":
            create = getattr(getattr(cv2, "optflow", None), "DualTVL1OpticalFlow_create", None)
            if create is None:
                raise StfnError(
                    f"TV-L1 flow needs OpenCV's contrib modules (cv2.optflow), missing in OpenCV {cv2.__version__}: "
                    "pip install opencv-contrib-python-headless (and uninstall opencv-python*)"
                )
            self._impl = create()
        elif algorithm == "farneback":
            self._impl = None
        else:
            raise StfnError(f"unknown OpenCV flow algorithm '{algorithm}'")

    def pair(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Flow ``(H, W, 2)`` float32 from gray ``prev`` to gray ``nxt`` (both ``(H, W)`` uint8)."""
        import cv2

        if self._impl is None:
            return cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        if self.algorithm == "dis":
            self._impl.setFinestScale(self._finest_scale)
        return self._impl.calc(prev, nxt, None)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        gray = np.ascontiguousarray(_gray(frames))
        n, h, w = gray.shape
        out = np.empty((max(n - 1, 0), h, w, 2), np.float32)
        for k in range(n - 1):
            out[k] = self.pair(gray[k], gray[k + 1])
        return out


class RaftFlow:
    """torchvision RAFT: ``__call__(frames (N, H, W, 3) uint8 RGB) -> (N-1, H, W, 2) float32``.

    Args:
        model: ``"small"`` (raft_small) or ``"large"`` (raft_large).
        weights: ``"default"`` (pretrained, through the torchvision weights API: needs the network
            once, or the file in the torch hub cache), a path to a state-dict file, or ``"random"``
            (untrained: for speed tests only).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        iters: recurrent refinement steps (torchvision default 12).
        batch_size: frame pairs per forward pass.
    """

    def __init__(
        self,
        model: str = "small",
        weights: str = "default",
        device: str = "auto",
        iters: int = 12,
        batch_size: int = 8,
    ) -> None:
        import torch
        from torchvision.models import optical_flow as of

        if model not in ("small", "large"):
            raise StfnError(f"unknown RAFT model '{model}' (choose small or large)")
        builder = of.raft_small if model == "small" else of.raft_large
        enum = of.Raft_Small_Weights if model == "small" else of.Raft_Large_Weights
        if weights == "random":
            net = builder(weights=None)
        elif weights == "default":
            try:
                net = builder(weights=enum.DEFAULT)
            except (OSError, RuntimeError) as e:  # URLError is an OSError
                raise StfnError(
                    f"the pretrained RAFT-{model} weights ({enum.DEFAULT.url}) could not be downloaded "
                    f"({e.__class__.__name__}: {e}); download the file once where there is network and put it in "
                    f"{torch.hub.get_dir()}/checkpoints, or pass its path as the RAFT weights"
                ) from None
        else:
            net = builder(weights=None)
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
                net.load_state_dict(state)
            except (OSError, RuntimeError, KeyError) as e:
                raise StfnError(f"cannot load RAFT-{model} weights from '{weights}': {e.__class__.__name__}") from None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.iters, self.batch_size = int(iters), max(1, int(batch_size))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise StfnError(f"RAFT needs RGB frames (N, H, W, 3), got shape {frames.shape}")
        n, h, w, _ = frames.shape
        out = np.empty((max(n - 1, 0), h, w, 2), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2)
        x = x.float().div_(127.5).sub_(1.0)
        # RAFT needs sides divisible by 8 and at least 128 (its correlation pyramid): pad, or enlarge
        small = min(h, w) < 128
        if small:
            size = (max(128, -(-h // 8) * 8), max(128, -(-w // 8) * 8))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            scale = torch.tensor([w / size[1], h / size[0]], device=self.device).view(1, 2, 1, 1)
        else:
            x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), mode="replicate")
        with torch.inference_mode():
            for s in range(0, n - 1, self.batch_size):
                e = min(s + self.batch_size, n - 1)
                flows = self.net(x[s:e], x[s + 1 : e + 1], num_flow_updates=self.iters)[-1]
                if small:
                    flows = F.interpolate(flows, size=(h, w), mode="bilinear", align_corners=False) * scale
                out[s:e] = flows[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy()
        return out


def create_estimator(algorithm: str = DEFAULT_ALGORITHM, **opts) -> FlowEstimator:
    """A reusable flow estimator. ``opts``: ``preset`` (dis); ``model``, ``weights``, ``device``,
    ``iters``, ``batch_size`` (raft). Unknown algorithms or options raise :class:`StfnError`."""
    allowed = {
        "dis": {"preset"},
        "tvl1": set(),
        "farneback": set(),
        "raft": {"model", "weights", "device", "iters", "batch_size"},
    }
    if algorithm not in allowed:
        raise StfnError(f"unknown flow algorithm '{algorithm}' (choose {', '.join(ALGORITHMS)})")
    extra = set(opts) - allowed[algorithm]
    if extra:
        raise StfnError(f"flow algorithm '{algorithm}' has no option {', '.join(sorted(extra))}")
    if algorithm == "raft":
        return RaftFlow(**opts)
    return OpenCVFlow(algorithm, **opts)


@functools.lru_cache(maxsize=4)
def _cached(algorithm: str, opts: tuple) -> FlowEstimator:
    return create_estimator(algorithm, **dict(opts))


def compute_flow(frames: np.ndarray, algorithm: str = DEFAULT_ALGORITHM, **opts) -> np.ndarray:
    """Flow between consecutive frames: ``(N, H, W, 3)`` uint8 RGB (or ``(N, H, W)`` gray; RAFT needs
    RGB) -> ``(N-1, H, W, 2)`` float32 pixels, x then y. Works on any frame size.

    The estimator is built once per (algorithm, options) and reused (RAFT loads its weights once).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise StfnError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim not in (3, 4) or len(frames) < 1:
        raise StfnError(f"frames must be (N, H, W, 3) or (N, H, W) with N >= 1, got shape {frames.shape}")
    return _cached(algorithm, tuple(sorted(opts.items())))(frames)


# --- accuracy check on synthetic ground truth -----------------------------------------------------

MOTIONS = ("shift", "rotate", "zoom")


def synthetic_pair(
    motion: str = "shift", size: tuple[int, int] = (320, 240), seed: int = 0, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two RGB frames of a textured image with known motion between them.

    ``motion``: ``shift`` (3.4, -2.3 px), ``rotate`` (3 degrees about the centre) or ``zoom`` (x1.05
    about the centre), each scaled by ``strength`` (3 gives up to ~25 px at 320x240). Returns ``frames (2, H, W, 3)`` uint8, ground-truth ``flow (H, W, 2)`` float32
    (frame 0 -> frame 1) and ``valid (H, W)`` bool (pixels that stay inside frame 1, 4 px margin).
    """
    import cv2

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
        raise StfnError(f"unknown synthetic motion '{motion}' (choose {', '.join(MOTIONS)})")
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
