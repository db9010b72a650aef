"""Optical flow: numbering and sign conventions, quantisation, accuracy on synthetic ground truth."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stfn.data.video import flow as F
from stfn.data.video.flow import flow_to_color
from stfn.errors import StfnError
from suite_helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import flow_truth as truth  # noqa: E402  (the ground-truth fixture, shared with benchmarks/flow.py)

pytestmark = pytest.mark.timeout(120)

SIZE = (128, 96)  # small enough for TV-L1 (~1 pair/s at 320x240) in the default suite

# mean end-point error bounds (pixels) on the synthetic pairs; measured values are 2-4x lower,
# and predicting zero flow scores 1.9-4 px
EPE_BOUNDS = {
    ("dis", "ultrafast"): 0.9,
    ("dis", "fast"): 0.7,
    ("dis", "medium"): 0.25,
    ("farneback", None): 0.3,
    ("tvl1", None): 0.2,
}


@pytest.fixture(autouse=True)
def _one_thread():
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(threads)


def test_quantise_round_trip_within_one_step() -> None:
    rng = np.random.default_rng(0)
    for bound in (20.0, 5.0):
        v = rng.uniform(-bound, bound, (1000, 2)).astype(np.float32)
        q = F.quantize_flow(v, bound)
        assert q.dtype == np.uint8
        step = 2 * bound / 255
        assert np.abs(F.dequantize_flow(q, bound) - v).max() <= step / 2 + 1e-5
    # end points, clipping, zero
    q = F.quantize_flow(np.array([-20.0, -100.0, 0.0, 20.0, 1e9]), 20.0)
    assert q.tolist() == [0, 0, 128, 255, 255]
    assert F.dequantize_flow(np.array([0, 255], np.uint8), 20.0).tolist() == [-20.0, 20.0]
    with pytest.raises(StfnError):
        F.quantize_flow(np.zeros(2), 0.0)


def test_flip_of_a_flow_x_image_equals_the_negated_flow() -> None:
    """Flipping a video horizontally negates flow-x: on stored images, q -> 255 - q."""
    rng = np.random.default_rng(1)
    v = rng.uniform(-25, 25, (40, 30)).astype(np.float32)
    q = F.quantize_flow(v)
    flipped = 255 - q[:, ::-1]
    expected = F.quantize_flow(-v[:, ::-1])
    assert np.abs(flipped.astype(int) - expected).max() <= 1  # exact but for ties at .5
    assert (flipped == expected).mean() > 0.99
    # and physically: flow computed on flipped frames is the flipped flow with x negated
    frames, gt, valid = truth.synthetic_pair("rotate", size=SIZE)
    flow = F.compute_flow(frames, "farneback")[0]
    flow_flipped = F.compute_flow(np.ascontiguousarray(frames[:, :, ::-1]), "farneback")[0]
    m = valid & valid[:, ::-1]
    assert np.abs(flow_flipped[..., 0] + flow[:, ::-1, 0])[m].mean() < 0.05
    assert np.abs(flow_flipped[..., 1] - flow[:, ::-1, 1])[m].mean() < 0.05


@pytest.mark.parametrize("algorithm", ["dis", "farneback", "tvl1"])
def test_n_frames_give_n_minus_1_fields_from_frame_k_to_k_plus_1(algorithm: str) -> None:
    pair, gt, valid = truth.synthetic_pair("shift", size=SIZE)  # frame 1 = frame 0 moved by (+3.4, -2.3)
    frames = np.concatenate([pair, pair[:1]])  # 0 -> 1 -> back to 0
    flow = F.compute_flow(frames, algorithm)
    assert flow.shape == (2, SIZE[1], SIZE[0], 2) and flow.dtype == np.float32
    fwd = np.median(flow[0][valid], axis=0)
    back = np.median(flow[1][valid], axis=0)
    np.testing.assert_allclose(fwd, [3.4, -2.3], atol=0.3)  # x then y, pixels, motion k -> k+1
    np.testing.assert_allclose(back, [-3.4, 2.3], atol=0.5)
    assert F.compute_flow(frames[:1], algorithm).shape == (0, SIZE[1], SIZE[0], 2)
    if algorithm == "dis":  # grayscale input works too
        gray = np.stack([f.mean(-1).astype(np.uint8) for f in frames])
        assert F.compute_flow(gray, algorithm).shape == flow.shape


@pytest.mark.parametrize(("algorithm", "preset"), list(EPE_BOUNDS))
@pytest.mark.parametrize("motion", truth.MOTIONS)
def test_end_point_error_on_synthetic_ground_truth(algorithm: str, preset: str | None, motion: str) -> None:
    frames, gt, valid = truth.synthetic_pair(motion, size=SIZE, seed=3)
    opts = {"preset": preset} if preset else {}
    epe = truth.endpoint_error(F.compute_flow(frames, algorithm, **opts)[0], gt, valid)
    zero = truth.endpoint_error(np.zeros_like(gt), gt, valid)
    assert zero > 1.5
    assert epe < EPE_BOUNDS[(algorithm, preset)], f"{algorithm}/{preset} on {motion}: EPE {epe:.3f}"


def test_bad_names_and_inputs_raise() -> None:
    with pytest.raises(StfnError, match="unknown flow algorithm 'pwc'"):
        F.compute_flow(np.zeros((2, 8, 8), np.uint8), "pwc")
    with pytest.raises(StfnError, match="DIS preset"):
        F.create_estimator("dis", preset="slow")
    with pytest.raises(StfnError, match="no option"):
        F.create_estimator("tvl1", preset="fast")
    with pytest.raises(StfnError, match="uint8"):
        F.compute_flow(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="motion"):
        truth.synthetic_pair("shear")


def test_missing_tvl1_fails_clearly(monkeypatch) -> None:
    import cv2

    monkeypatch.delattr(cv2, "optflow", raising=False)
    with pytest.raises(StfnError, match="contrib"):
        F.create_estimator("tvl1")


# The cached DIS estimator must not carry state from one frame size to the next.


def _pair(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = (rng.random((h // 4, w // 4)) * 255).astype(np.uint8)
    img = np.kron(base, np.ones((4, 4), np.uint8))
    return np.stack([img, np.roll(img, 2, axis=1)])


def test_dis_flow_of_a_large_frame_does_not_depend_on_a_small_frame_seen_before():
    F._cached.cache_clear()
    big = _pair(240, 320, 0)
    fresh = F.compute_flow(big, "dis")
    F._cached.cache_clear()
    F.compute_flow(_pair(16, 16, 1), "dis")  # a tiny frame first: DIS shrinks its pyramid
    after_small = F.compute_flow(big, "dis")
    np.testing.assert_array_equal(fresh, after_small)


# --- the one table of flow options --------------------------------------------------------------


def test_flow_settings_record_the_options_that_change_the_flow() -> None:
    assert F.flow_settings("dis", {}, 20) == {"algorithm": "dis", "preset": F.DEFAULT_DIS_PRESET, "bound": 20.0}
    raft = F.flow_settings("raft", {"iters": "4", "device": "cuda:1", "batch_size": 2}, 8)
    assert raft == {"algorithm": "raft", "model": "small", "weights": "default", "iters": 4, "bound": 8.0}
    assert list(raft) == ["algorithm", "model", "weights", "iters", "bound"]  # the manifest's key order
    assert F.flow_settings("none", {}, 20) == {"algorithm": "none", "bound": 20.0}
    assert F.recorded_options(raft) == {"model": "small", "weights": "default", "iters": 4}
    assert F.recorded_options({"algorithm": "tvl1", "bound": 5.0}) == {}
    assert F.recorded_options({"preset": None}) == {}  # algorithm defaults to dis; unset options are left out
    assert F.flow_name(raft) == "raft:small:default:4" and F.flow_name({"preset": "medium"}) == "dis:medium"
    assert set(F.ALGORITHMS) == set(F.FLOW_OPTIONS)


def test_parse_flow_spec_sets_the_option_with_choices() -> None:
    assert F.parse_flow_spec("dis:medium") == {"algorithm": "dis", "preset": "medium"}
    assert F.parse_flow_spec("raft:large") == {"algorithm": "raft", "model": "large"}
    assert F.parse_flow_spec("farneback") == {"algorithm": "farneback"}
    with pytest.raises(StfnError, match=r"'12' is not an option of 'raft' \(dis:ultrafast\|fast\|medium, raft:small\|large\)"):
        F.parse_flow_spec("raft:12")
    with pytest.raises(StfnError, match="unknown flow algorithm 'lk' in --flow lk"):
        F.parse_flow_spec("lk")


def test_opencv_flow_needs_no_torch() -> None:
    """``stfn prepare``'s workers import this module: torch (~270 MB a process) loads only for RAFT."""
    code = ("import sys, numpy as np; from stfn.data.video import flow; from stfn.data.prepare import run; "
            "flow.compute_flow(np.zeros((2, 16, 16), np.uint8), 'dis'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("flow", "rgb"), [
    ((1.0, 0.0), (255, 0, 0)),       # right: red
    ((0.0, 1.0), (128, 255, 0)),     # down (image y), 90 degrees: yellow-green
    ((-1.0, 0.0), (0, 255, 255)),    # left: cyan
    ((0.0, -1.0), (128, 0, 255)),    # up, 270 degrees: violet
    ((0.5, 0.0), (128, 0, 0)),       # half the largest magnitude: half brightness
    ((0.0, 0.0), (0, 0, 0)),         # no motion: black
])
def test_flow_to_color_wheel(flow, rgb) -> None:
    field = np.array([[flow]], np.float32)
    out = flow_to_color(field, max_magnitude=1.0)
    assert out.shape == (1, 1, 3) and out.dtype == np.uint8
    assert np.abs(out[0, 0].astype(int) - rgb).max() <= 1


def test_flow_to_color_normalises_by_the_largest_motion() -> None:
    field = np.zeros((2, 2, 2), np.float32)
    field[0, 0] = (0.0, 4.0)
    field[1, 1] = (2.0, 0.0)
    out = flow_to_color(field)
    assert out[0, 0].max() == 255 and out[1, 1, 0] == 128 and out[0, 1].max() == 0
    assert flow_to_color(np.zeros((3, 3, 2), np.float32)).max() == 0  # no motion anywhere: no division by 0
