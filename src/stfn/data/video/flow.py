"""Dense optical flow between consecutive frames, and its 8-bit storage (TSN / MMAction2).

Algorithms, by name:

* ``dis`` (default): OpenCV DIS, presets ``ultrafast``/``fast``/``medium``. Fast on one CPU core.
* ``tvl1``: OpenCV-contrib Dual TV-L1, the classic choice of TSN and I3D; about 1 pair/s on a CPU core.
* ``farneback``: OpenCV Farneback.
* ``raft``: torchvision RAFT (``raft_small`` or ``raft_large``), batched, on a GPU when there is one
  (:mod:`stfn.data.video.raft`).

Options: :data:`FLOW_OPTIONS`, the one table of each algorithm's options and defaults. ``stfn prepare``
takes them and writes the ones that change the flow into its manifest (:func:`flow_settings`),
training copies that entry into the checkpoint, and ``stfn predict`` reads it back
(:func:`recorded_options`, :func:`parse_flow_spec` for ``--flow ALGO[:OPTION]``).

Numbering: ``N`` frames give ``N - 1`` flow fields; field ``k`` (0-based) is the motion from frame ``k``
to frame ``k + 1``, in pixels, channels ``(x, y)``: ``frame[k](p) ~ frame[k + 1](p + flow[k](p))``.
``stfn prepare`` stores field ``k`` as ``flow_x_{k+1:05d}.jpg`` / ``flow_y_{k+1:05d}.jpg`` next to
``img_{k+1:05d}.jpg`` (1-based files, MMAction2 layout).

Storage: ``q = round((clip(v, -b, b) + b) * 255 / (2 b))`` as uint8, one grayscale JPEG per component;
``v = q * 2 b / 255 - b``; bound ``b`` defaults to 20. A horizontal flip of a video negates flow-x:
``q -> 255 - q`` on the flipped image.

OpenCV (and, for RAFT, torch) are imported on first use: ``stfn prepare``'s worker processes and the
command line load this module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stfn.errors import StfnError

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "DEFAULT_BOUND",
    "DEFAULT_DIS_PRESET",
    "DIS_PRESETS",
    "FLOW_OPTIONS",
    "RAFT_MODELS",
    "FlowOption",
    "compute_flow",
    "create_estimator",
    "dequantize_flow",
    "flow_name",
    "flow_to_color",
    "flow_settings",
    "parse_flow_spec",
    "quantize_flow",
    "recorded_options",
]

DIS_PRESETS = ("ultrafast", "fast", "medium")
RAFT_MODELS = ("small", "large")
DEFAULT_ALGORITHM = "dis"
DEFAULT_DIS_PRESET = "fast"
DEFAULT_BOUND = 20.0


@dataclass(frozen=True)
class FlowOption:
    """One option of a flow algorithm: its default, its allowed values when they are a fixed list
    (that option is the one ``--flow ALGO:VALUE`` sets), and whether it changes the flow
    (``recorded``: kept in the manifest and the checkpoint) or only where and how fast it is computed."""

    default: Any
    choices: tuple[str, ...] = ()
    recorded: bool = True


FLOW_OPTIONS: dict[str, dict[str, FlowOption]] = {
    "dis": {"preset": FlowOption(DEFAULT_DIS_PRESET, DIS_PRESETS)},
    "tvl1": {},
    "farneback": {},
    "raft": {
        "model": FlowOption("small", RAFT_MODELS),
        "weights": FlowOption("default"),  # "default" (pretrained), a state-dict file, or "random"
        "iters": FlowOption(12),  # recurrent refinement steps
        "device": FlowOption("auto", recorded=False),
        "batch_size": FlowOption(8, recorded=False),  # frame pairs per forward pass
    },
}
ALGORITHMS = tuple(FLOW_OPTIONS)
_SPEC_OPTION = {algo: name for algo, opts in FLOW_OPTIONS.items() for name, o in opts.items() if o.choices}

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
    import cv2  # on first use (see the module docstring), as below

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
        import cv2  # see _gray

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
        import cv2  # see _gray

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


def create_estimator(algorithm: str = DEFAULT_ALGORITHM, **opts) -> FlowEstimator:
    """A reusable flow estimator. ``opts``: the algorithm's :data:`FLOW_OPTIONS` (``preset`` for dis;
    ``model``, ``weights``, ``device``, ``iters``, ``batch_size`` for raft). Unknown algorithms or
    options raise :class:`StfnError`."""
    if algorithm not in FLOW_OPTIONS:
        raise StfnError(f"unknown flow algorithm '{algorithm}' (choose {', '.join(ALGORITHMS)})")
    extra = set(opts) - set(FLOW_OPTIONS[algorithm])
    if extra:
        raise StfnError(f"flow algorithm '{algorithm}' has no option {', '.join(sorted(extra))}")
    if algorithm == "raft":
        return _raft().RaftFlow(**{name: o.default for name, o in FLOW_OPTIONS["raft"].items()} | opts)
    return OpenCVFlow(algorithm, **opts)


def raft_worker_devices(device: str) -> tuple[str, int]:
    """Where ``stfn prepare``'s RAFT workers run (:func:`stfn.data.video.raft.worker_devices`)."""
    return _raft().worker_devices(device)


def _raft():
    """:mod:`stfn.data.video.raft`, imported on first use: it loads torch and torchvision (seconds and ~270 MB a
    process), which the OpenCV algorithms and ``stfn prepare``'s worker processes do without. The
    package's one lazy import of its own code; no cycle (raft imports nothing from this module)."""
    from stfn.data.video import raft  # lazy on purpose: torch, see the docstring

    return raft


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


# --- the options of a recorded flow (manifest, checkpoint, --flow) ---------------------------------


def flow_settings(algorithm: str, opts: Mapping[str, Any], bound: float) -> dict[str, Any]:
    """The ``flow`` entry of a manifest: ``{"algorithm", its recorded options (defaults filled in), "bound"}``."""
    settings: dict[str, Any] = {"algorithm": algorithm}
    for name, option in FLOW_OPTIONS.get(algorithm, {}).items():
        if option.recorded:
            settings[name] = type(option.default)(opts.get(name, option.default))
    settings["bound"] = float(bound)
    return settings


def recorded_options(flow: Mapping[str, Any]) -> dict[str, Any]:
    """The estimator options a recorded ``flow`` entry asks for: its recorded options that are set."""
    options = FLOW_OPTIONS.get(flow.get("algorithm", DEFAULT_ALGORITHM), {})
    return {k: flow[k] for k, o in options.items() if o.recorded and flow.get(k) is not None}


def flow_name(flow: Mapping[str, Any]) -> str:
    """``"dis:fast"``, ``"tvl1"``, ``"raft:small:default:12"``: the algorithm and its recorded options."""
    return flow.get("algorithm", DEFAULT_ALGORITHM) + "".join(f":{v}" for v in recorded_options(flow).values())


def parse_flow_spec(spec: str) -> dict[str, Any]:
    """``"dis"``, ``"dis:medium"``, ``"tvl1"``, ``"farneback"``, ``"raft"``, ``"raft:large"`` -> flow dict."""
    algo, _, option = spec.partition(":")
    if algo not in ALGORITHMS:
        raise StfnError(f"unknown flow algorithm '{algo}' in --flow {spec} (choose {', '.join(ALGORITHMS)})")
    out: dict[str, Any] = {"algorithm": algo}
    if option:
        name = _SPEC_OPTION.get(algo)
        if name is None or option not in FLOW_OPTIONS[algo][name].choices:
            forms = ", ".join(f"{a}:{'|'.join(FLOW_OPTIONS[a][n].choices)}" for a, n in _SPEC_OPTION.items())
            raise StfnError(f"--flow {spec}: '{option}' is not an option of '{algo}' ({forms})")
        out[name] = option
    return out


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Optical flow ``(H, W, 2)`` (x, y in pixels, y down) -> RGB uint8 ``(H, W, 3)``, the usual colour
    wheel: hue is the direction (right red, down yellow-green, left cyan, up violet: hue = angle), value
    (brightness) the magnitude over ``max_magnitude`` (default: the largest in ``flow``), saturation 1.
    No motion is black."""
    fx, fy = flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32)
    magnitude = np.hypot(fx, fy)
    top = float(magnitude.max()) if max_magnitude is None else float(max_magnitude)
    value = np.clip(magnitude / top, 0.0, 1.0) if top > 0 else np.zeros_like(magnitude)
    sector = (np.degrees(np.arctan2(fy, fx)) % 360.0) / 60.0  # hue in [0, 6)
    out = np.empty((*flow.shape[:2], 3), np.float32)
    for c, n in enumerate((5, 3, 1)):  # HSV -> RGB at s = 1: v * (1 - clip(min(k, 4 - k), 0, 1)), k = (n + h) mod 6
        k = (n + sector) % 6.0
        out[..., c] = value * (1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return (out * 255.0 + 0.5).astype(np.uint8)
