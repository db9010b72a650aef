"""The classes of the synthetic benchmark and the random scenes behind each of their videos.

Four groups, each hard in one way (see :mod:`stfn.data.synthetic.generate` for what solves which); inside a
group only the intended cue separates the classes:

- ``appearance``: one flat shape of random colour that drifts and turns at random; the shape is the
  class (Square, Disk, Triangle, Cross, Ring). RedAboveGreen / GreenAboveRed: a red and a green
  bullseye drifting at random in their halves of the frame; the colour layout is the class.
- ``motion``: one striped ellipse. Position, size and orientation have the same per-frame
  distribution in every class (a still class takes the track of a moving one at a random frame), so
  one frame says nothing; the motion is the class (slide right/left, spin clockwise/counter-clockwise,
  grow/shrink). TopLeftBottomRight / TopRightBottomLeft: two bullseyes of one colour, one per half,
  crossing in opposite directions. Mirror classes are twins: each video of one is a video of the
  other played backwards, so their frame multisets are identical.
- ``temporal_order``: one checkered disk that stays still except for two motion events of equal
  length, with at least ``still_gap`` still flow fields before, between and after them and random
  timing. A pair swaps the order of the two events (left-then-right vs right-then-left,
  appear-then-vanish vs vanish-then-appear, grow-then-shrink vs shrink-then-grow) over the same
  scene, and the still spans are balanced (middle = start + end + 1 frames), so the twins of a pair
  hold the same multiset of frames and of flow stacks: only the order differs.
- ``appearance_motion``: a red and a green bullseye of equal luma, one in each half (random which),
  crossing in opposite directions; the class is which colour goes left, i.e. (red is upper) XOR
  (upper goes left). Flow, computed on grayscale, cannot tell the colours apart, and one frame
  cannot tell the directions (twins are time reversals), so neither stream alone beats chance. Each
  half of the XOR is taught to one stream by a pair above (RedAboveGreen: one frame;
  TopLeftBottomRight: flow), so single-stream features carry what a fusion of the two needs.

Nuisances in every class: textured backgrounds, distractor blobs, camera shake, sensor noise,
random speeds, start times and video lengths. They are balanced across classes: the videos with the
same group and clip number in every class share backdrop, object colour, distractors, shake, noise
and length (and, inside a class group, the geometry draws), so no backdrop or colour can stand in
for the label, however few the training videos.
"""

from __future__ import annotations

import colorsys
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from stfn.data.synthetic.render import Obj, Scene, reverse_scene

__all__ = ["CATALOGUE", "GROUPS", "SyntheticClass", "build_scene", "min_frames", "pair_base"]

GROUPS = ("appearance", "motion", "temporal_order", "appearance_motion")
RED = (240.0, 40.0, 40.0)  # BT.601 luma 99.8
GREEN = (40.0, 142.0, 40.0)  # BT.601 luma 99.8: flow on grayscale cannot tell them apart
DARKC = (22.0, 22.0, 22.0)


@dataclass(frozen=True)
class SyntheticClass:
    """One class: ``twin`` is the other class of its pair; ``relation`` says how their videos relate:
    ``reverse`` (the twin's video is this one played backwards) or ``swap`` (same scene and events,
    events in the other order)."""

    name: str
    group: str
    description: str
    twin: str | None = None
    relation: str | None = None


def _c(name: str, group: str, description: str, twin: str | None = None, relation: str | None = None):
    return SyntheticClass(name, group, description, twin, relation)


_DRIFT = "drifting and turning at random (random direction and speed, possibly still); the shape is the class"
CATALOGUE: dict[str, SyntheticClass] = {c.name: c for c in [
    _c("Square", "appearance", f"a flat square of random colour {_DRIFT}"),
    _c("Disk", "appearance", f"a flat disk of random colour {_DRIFT}"),
    _c("Triangle", "appearance", f"a flat triangle of random colour {_DRIFT}"),
    _c("Cross", "appearance", f"a flat cross of random colour {_DRIFT}"),
    _c("Ring", "appearance", f"a flat ring of random colour {_DRIFT}"),
    _c("RedAboveGreen", "appearance", "a red bullseye in the upper half and a green one in the lower half, both "
       "drifting at random: the colour layout is the class (what the binding classes need from one frame)"),
    _c("GreenAboveRed", "appearance", "a green bullseye in the upper half and a red one in the lower half, both "
       "drifting at random: the colour layout is the class (what the binding classes need from one frame)"),
    _c("SlideRight", "motion", "a striped ellipse slides to the right", "SlideLeft", "reverse"),
    _c("SlideLeft", "motion", "a striped ellipse slides to the left", "SlideRight", "reverse"),
    _c("SpinClockwise", "motion", "a striped ellipse spins clockwise in place", "SpinCounterclockwise", "reverse"),
    _c("SpinCounterclockwise", "motion", "a striped ellipse spins counter-clockwise in place", "SpinClockwise",
       "reverse"),
    _c("Grow", "motion", "a striped ellipse grows in place", "Shrink", "reverse"),
    _c("Shrink", "motion", "a striped ellipse shrinks in place", "Grow", "reverse"),
    _c("TopLeftBottomRight", "motion", "two bullseyes of one colour, one in each half, cross the frame: the upper "
       "one goes left (what the binding classes need from motion)", "TopRightBottomLeft", "reverse"),
    _c("TopRightBottomLeft", "motion", "two bullseyes of one colour, one in each half, cross the frame: the upper "
       "one goes right (what the binding classes need from motion)", "TopLeftBottomRight", "reverse"),
    _c("LeftThenRight", "temporal_order", "a still checkered disk moves left, rests, then moves back right",
       "RightThenLeft", "swap"),
    _c("RightThenLeft", "temporal_order", "a still checkered disk moves right, rests, then moves back left",
       "LeftThenRight", "swap"),
    _c("AppearThenVanish", "temporal_order", "a checkered disk fades in, rests, then fades out",
       "VanishThenAppear", "swap"),
    _c("VanishThenAppear", "temporal_order", "a checkered disk fades out, stays away, then fades back in",
       "AppearThenVanish", "swap"),
    _c("GrowThenShrink", "temporal_order", "a still checkered disk grows, rests, then shrinks back",
       "ShrinkThenGrow", "swap"),
    _c("ShrinkThenGrow", "temporal_order", "a still checkered disk shrinks, rests, then grows back",
       "GrowThenShrink", "swap"),
    _c("RedLeftGreenRight", "appearance_motion", "a red and a green bullseye, one in each half, cross the frame: "
       "red goes left, green goes right", "GreenLeftRedRight", "reverse"),
    _c("GreenLeftRedRight", "appearance_motion", "a red and a green bullseye, one in each half, cross the frame: "
       "green goes left, red goes right", "RedLeftGreenRight", "reverse"),
]}
# The first class of each pair is the one sampled; its twin is derived from the same scene.
_BASES = ("SlideRight", "SpinClockwise", "Grow", "TopLeftBottomRight", "LeftThenRight", "AppearThenVanish",
          "GrowThenShrink", "RedLeftGreenRight")


def pair_base(name: str) -> str:
    """The class whose random scene a video of ``name`` is built from (itself when unpaired)."""
    twin = CATALOGUE[name].twin
    return twin if twin in _BASES else name


def min_frames(p: dict) -> int:
    """Shortest video the temporal-order classes allow: 2 events of ``event_min`` fields, 4 stills of
    ``still_gap`` fields split as start + end and middle = start + end + 1, plus 2."""
    return 4 * p["still_gap"] + 2 * p["event_min"] + 2


# ---------------------------------------------------------------------------------------- helpers
def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return tuple(round(255.0 * c, 2) for c in colorsys.hsv_to_rgb(h, s, v))


def _vivid(rng: np.random.Generator) -> tuple[float, float, float]:
    return _hsv(rng.random(), rng.uniform(0.65, 1.0), rng.uniform(0.8, 1.0))


def _const(n: int, v: float) -> np.ndarray:
    return np.full(n, v, dtype=np.float64)


def _window(rng: np.random.Generator, n: int) -> tuple[int, int]:
    """Active span of a motion: ``f`` flow fields (60-100% of the video) starting at frame ``t0``."""
    f = max(1, int(round(rng.uniform(0.6, 1.0) * (n - 1))))
    return int(rng.integers(0, n - f)), f


def _progress(n: int, t0: int, f: int) -> np.ndarray:
    """0 before the window, rising linearly to 1 at its end, 1 after: ``(N,)``."""
    return np.clip((np.arange(n) - t0) / f, 0.0, 1.0)


def _segment(rng: np.random.Generator, lo: float, hi: float, dmin: float, dmax: float) -> tuple[float, float]:
    d = min(rng.uniform(dmin, dmax), hi - lo)
    start = rng.uniform(lo, hi - d)
    return start, start + d


def _bounce(rng: np.random.Generator, n: int, lo, hi, speed: float) -> tuple[np.ndarray, np.ndarray]:
    """A straight path at ``speed`` px/frame in a random direction, reflected at ``[lo, hi]`` (a number,
    or ``(x, y)`` pairs for a box)."""
    lo, hi = np.broadcast_to(np.asarray(lo, dtype=float), 2), np.broadcast_to(np.asarray(hi, dtype=float), 2)
    pos = rng.uniform(lo, hi)
    th = rng.uniform(0.0, 2.0 * math.pi)
    vel = np.array([math.cos(th), math.sin(th)]) * speed
    out = np.empty((n, 2))
    for t in range(n):
        out[t] = pos
        pos = pos + vel
        for k in range(2):
            if pos[k] < lo[k] or pos[k] > hi[k]:
                vel[k] = -vel[k]
                pos[k] = 2 * lo[k] - pos[k] if pos[k] < lo[k] else 2 * hi[k] - pos[k]
    return out[:, 0], out[:, 1]


def _n_frames(rng: np.random.Generator, p: dict, even: bool = False) -> int:
    n = int(rng.integers(p["frames_min"], p["frames_max"] + 1))
    if even and n % 2:
        n = n - 1 if n - 1 >= p["frames_min"] else n + 1
    return n


def _scene(rng: np.random.Generator, p: dict, cls: str, n: int, main: list[Obj], events: dict) -> Scene:
    """Wrap the class objects with the nuisances (drawn from ``rng``, the stream every class shares):
    backdrop, distractors, shake, noise."""
    s = p["size"]
    kind = ["smooth", "grain", "stripes", "checker"][int(rng.integers(4))]
    bg = {"kind": kind, "seed": int(rng.integers(2**31)),
          "colour1": _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.45, 0.85)),
          "colour2": _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.25, 0.6)),
          "contrast": round(rng.uniform(0.2, 0.55), 4), "period": round(rng.uniform(3.5, 9.0) * s / 64, 4),
          "angle": round(rng.uniform(0.0, math.pi), 4)}
    distractors = []
    for _ in range(int(rng.integers(0, p["distractors"] + 1))):
        r = rng.uniform(0.05, 0.08) * s
        x, y = _bounce(rng, n, r, s - r, rng.uniform(0.0, 0.02 * s))
        col = _hsv(rng.random(), rng.uniform(0.1, 0.4), rng.uniform(0.4, 0.9))
        distractors.append(Obj("distractor", "blob", "soft", col, col, x, y, _const(n, r), _const(n, 0.0),
                               _const(n, rng.uniform(0.6, 0.9))))
    sigma, noise_seed = round(rng.uniform(p["noise_min"], p["noise_max"]), 4), int(rng.integers(2**31))
    walk = np.random.default_rng(int(rng.integers(2**31)))  # own stream: lengths differ, the rest stays shared
    shake = np.zeros((n, 2), dtype=np.int64)
    if p["shake"] > 0:
        steps = walk.integers(-1, 2, size=(n, 2)) * (walk.random((n, 2)) < 0.3)
        for t in range(1, n):
            shake[t] = np.clip(shake[t - 1] + steps[t], -p["shake"], p["shake"])
    return Scene(cls=cls, group=CATALOGUE[cls].group, size=s, n_frames=n, objects=distractors + main,
                 background=bg, shake=shake, noise_sigma=sigma, noise_seed=noise_seed, frame_ids=np.arange(n),
                 margin=max(2, p["shake"] + 1), events=events)


# ---------------------------------------------------------------------------------------- groups
def _appearance(rng: np.random.Generator, nuis: np.random.Generator, p: dict, cls: str) -> Scene:
    s, n, colour = p["size"], _n_frames(nuis, p), _vivid(nuis)
    r = rng.uniform(0.16, 0.2) * s
    x, y = _bounce(rng, n, 1.2 * r + 1, s - 1.2 * r - 1, rng.uniform(0.0, 0.025 * s))
    angle = rng.uniform(0, 2 * math.pi) + rng.uniform(-0.1, 0.1) * np.arange(n)
    obj = Obj("main", cls.lower(), "flat", colour, DARKC, x, y, _const(n, r), angle, _const(n, 1.0))
    return _scene(nuis, p, cls, n, [obj], {})


def _motion(rng: np.random.Generator, nuis: np.random.Generator, p: dict, cls: str) -> Scene:
    """SlideRight, SpinClockwise or Grow (their twins are these reversed)."""
    s, n, colour = p["size"], _n_frames(nuis, p), _vivid(nuis)
    t0, f = _window(rng, n)
    prog = _progress(n, t0, f)
    r_lo = rng.uniform(0.13, 0.15) * s
    r_hi = r_lo * rng.uniform(1.3, 1.5)
    x0, x1 = _segment(rng, r_hi + 1, s - r_hi - 1, 0.3 * s, 0.5 * s)
    y = _const(n, rng.uniform(r_hi + 1, s - r_hi - 1))
    angle0, omega = rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 0.2)

    def still(track: np.ndarray) -> np.ndarray:  # a moving track frozen at a random frame
        return _const(n, float(track[int(rng.integers(n))]))

    xs, rs, turn = x0 + (x1 - x0) * prog, r_lo + (r_hi - r_lo) * prog, angle0 + omega * f * prog
    xs, rs, turn = (xs if cls == "SlideRight" else still(xs), rs if cls == "Grow" else still(rs),
                    turn if cls == "SpinClockwise" else still(turn))
    dark = tuple(round(0.3 * c, 2) for c in colour)
    obj = Obj("main", "ellipse", "stripes", colour, dark, xs, y, rs, turn, _const(n, 1.0), aspect=0.55,
              period=max(3.0, 0.45 * r_lo))
    return _scene(nuis, p, cls, n, [obj], {"active_frames": [t0, t0 + f]})


def _ping_pong(n: int, a: int, m: int, b: int) -> np.ndarray:
    """Integer state per frame: 0 for ``a`` fields, up to ``m`` in ``m`` steps, ``m`` for ``b`` fields,
    back down to 0 in ``m`` steps, 0 to the end: ``(N,)``."""
    s = np.zeros(n, dtype=np.int64)
    s[a: a + m + 1] = np.arange(m + 1)
    s[a + m: a + m + b + 1] = m
    s[a + m + b: a + 2 * m + b + 1] = np.arange(m, -1, -1)
    return s


def _temporal(rng: np.random.Generator, nuis: np.random.Generator, p: dict, cls: str) -> Scene:
    """LeftThenRight, AppearThenVanish, GrowThenShrink, or (``swap``) their twins, from the same draws."""
    s, g = p["size"], p["still_gap"]
    n, colour = _n_frames(nuis, p, even=True), _vivid(nuis)
    m = int(rng.integers(p["event_min"], min(p["event_max"], (n - 2 - 4 * g) // 2) + 1))
    ac = (n - 2 - 2 * m) // 2
    a = int(rng.integers(g, ac - g + 1))
    b, c = ac + 1, ac - a
    state = _ping_pong(n, a, m, b)
    if CATALOGUE[cls].relation == "swap" and cls not in _BASES:
        state = m - state
    u = state / m  # exact: twins use the same floats
    r = rng.uniform(0.13, 0.17) * s
    x0, x1 = _segment(rng, 1.2 * r + 1, s - 1.2 * r - 1, 0.3 * s, 0.45 * s)
    y = _const(n, rng.uniform(1.2 * r + 1, s - 1.2 * r - 1))
    x, rs, alpha = _const(n, rng.uniform(x0, x1)), _const(n, r), _const(n, 1.0)
    if cls in ("LeftThenRight", "RightThenLeft"):
        x = x1 + (x0 - x1) * u  # u = 0 on the right, 1 on the left
    elif cls in ("AppearThenVanish", "VanishThenAppear"):
        alpha = u
    else:
        rs = r * (0.7 + 0.55 * u)
    dark = tuple(round(0.3 * v, 2) for v in colour)
    obj = Obj("main", "disk", "checker", colour, dark, x, y, rs, _const(n, rng.uniform(0, 2 * math.pi)), alpha,
              period=max(3.0, 0.55 * r))
    events = {"event_starts": [a, a + m + b], "event_fields": m, "still_fields": [a, b, c]}
    return _scene(nuis, p, cls, n, [obj], events)


def _two_bullseyes(rng: np.random.Generator, nuis: np.random.Generator, p: dict, cls: str) -> Scene:
    """Two bullseyes, one per half of the frame (upper or lower, from the shared draws):

    - RedAboveGreen / GreenAboveRed (appearance): red and green drift at random; the layout is the class;
    - TopLeftBottomRight (motion; its twin is it reversed): one colour, the upper one goes left;
    - RedLeftGreenRight (appearance_motion; its twin is it reversed): red goes left, green right, and
      red's half is random, so the label is (red is upper) XOR (upper goes left).
    """
    s, n, colour = p["size"], _n_frames(nuis, p), _vivid(nuis)
    t0, f = _window(rng, n)
    prog = _progress(n, t0, f)
    r = rng.uniform(0.13, 0.16) * s
    red_upper = bool(rng.random() < 0.5)
    bands = [(r + 1, s / 2 - r - 1), (s / 2 + r + 1, s - r - 1)]  # y ranges of the upper and lower half
    speeds = rng.uniform(0.0, 0.025 * s, 2)
    segments = [_segment(rng, r + 1, s - r - 1, 0.3 * s, 0.5 * s) for _ in range(2)]
    if cls in ("RedAboveGreen", "GreenAboveRed"):
        red_upper = cls == "RedAboveGreen"
        colours, roles = ((RED, GREEN), ("red", "green")) if red_upper else ((GREEN, RED), ("green", "red"))
        tracks = [_bounce(rng, n, (r + 1, lo), (s - r - 1, hi), v)
                  for (lo, hi), v in zip(bands, speeds, strict=True)]
    else:
        if cls == "TopLeftBottomRight":
            colours, roles, left = (colour, colour), ("upper", "lower"), (True, False)
        else:  # RedLeftGreenRight
            colours, roles = ((RED, GREEN), ("red", "green")) if red_upper else ((GREEN, RED), ("green", "red"))
            left = (red_upper, not red_upper)
        tracks = []
        for (lo, hi), (x0, x1), go_left in zip(bands, segments, left, strict=True):
            x = x1 + (x0 - x1) * prog if go_left else x0 + (x1 - x0) * prog
            tracks.append((x, _const(n, rng.uniform(lo, hi))))
    objs = [Obj(role, "disk", "bullseye", c, DARKC, x, y, _const(n, r), _const(n, 0.0), _const(n, 1.0))
            for role, c, (x, y) in zip(roles, colours, tracks, strict=True)]
    return _scene(nuis, p, cls, n, objs, {"active_frames": [t0, t0 + f], "red_upper": red_upper})


_BUILDERS: dict[str, Callable[[np.random.Generator, np.random.Generator, dict, str], Scene]] = {
    "appearance": _appearance, "motion": _motion, "temporal_order": _temporal, "appearance_motion": _two_bullseyes,
}
_TWO = ("RedAboveGreen", "GreenAboveRed", "TopLeftBottomRight", "TopRightBottomLeft")


def _builder(name: str) -> Callable[[np.random.Generator, np.random.Generator, dict, str], Scene]:
    return _two_bullseyes if name in _TWO else _BUILDERS[CATALOGUE[name].group]


def build_scene(name: str, p: dict, entropy: Sequence[int]) -> Scene:
    """The scene of one video of class ``name``.

    ``entropy`` (e.g. ``[seed, group, clip]``) seeds two random streams: the nuisances (length,
    backdrop, object colour, distractors, shake, noise) come from one that every class shares, the
    geometry from one that every class of the same class group shares. So the videos with equal
    entropy differ only in the class cue: no backdrop or colour can be memorised as a label, and the
    two classes of a pair are twins (see :class:`SyntheticClass`).
    """
    spec = CATALOGUE[name]
    base = pair_base(name)
    key = [*map(int, entropy)]
    nuis = np.random.default_rng(np.random.SeedSequence([*key, zlib.crc32(b"nuisance")]))
    rng = np.random.default_rng(np.random.SeedSequence([*key, zlib.crc32(spec.group.encode())]))
    if spec.relation == "reverse" and name != base:
        return reverse_scene(_builder(base)(rng, nuis, p, base), name)
    return _builder(name)(rng, nuis, p, name)
