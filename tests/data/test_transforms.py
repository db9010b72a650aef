"""Clip transforms: shared geometry across frames and streams, flow-x flip, crops, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stfn.config import ConfigError, DataConfig
from stfn.data.transforms import (
    SCALES,
    EvalTransform,
    TrainTransform,
    build_transform,
    color_jitter,
    crop_resize,
    eval_crop_boxes,
    hflip,
    hflip_flow,
    multiscale_crop_box,
    normalize_flow,
    normalize_rgb,
)
from stfn.data.video.flow import dequantize_flow, quantize_flow

torch.set_num_threads(1)


def random_flow(t=2, length=3, h=12, w=16, seed=0, bound=20.0):
    """Flow in pixels ``(T, 2L, H, W)`` and its quantised uint8 tensor."""
    v = np.random.default_rng(seed).uniform(-bound, bound, size=(t, 2 * length, h, w)).astype(np.float32)
    return v, torch.from_numpy(quantize_flow(v, bound))


def test_flip_negates_flow_x_after_dequantisation():
    v, q = random_flow()
    flipped = hflip_flow(q)
    back = dequantize_flow(flipped.numpy())
    orig = dequantize_flow(q.numpy())
    # x channels (0, 2, 4): mirrored and negated; y channels: only mirrored
    np.testing.assert_allclose(back[:, 0::2], -orig[:, 0::2, :, ::-1], atol=1e-5)
    np.testing.assert_array_equal(back[:, 1::2], orig[:, 1::2, :, ::-1])
    np.testing.assert_allclose(orig, v, atol=20.0 / 255 + 1e-5)  # quantisation: within half a step
    assert torch.equal(hflip_flow(flipped), q)  # an involution
    assert q[0, 0, 0, 0] != flipped[0, 0, 0, -1] or q[0, 0, 0, 0] == 127  # it did change something


def test_normalised_flow_is_flow_over_bound_and_flip_is_exact_negation():
    q = torch.arange(256, dtype=torch.uint8).view(1, 2, 8, 16)
    for bound in (20.0, 8.0):
        np.testing.assert_allclose(normalize_flow(q).numpy(), dequantize_flow(q.numpy(), bound) / bound, atol=1e-6)
    n = normalize_flow(q)
    assert n.min() == -1.0 and n.max() == 1.0
    flipped = hflip({"flow": q})["flow"]
    assert torch.equal(normalize_flow(flipped)[:, 0], -n[:, 0].flip(-1))  # exact, not approximately


def test_ten_crop_flipped_views_mirror_the_first_five():
    _, q = random_flow(t=3, length=2, h=40, w=52, seed=1)
    rgb = torch.randint(0, 256, (3, 3, 40, 52), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = EvalTransform(crop_size=32, scale_size=40, views=10)({"rgb": rgb, "flow": q})
    assert out["rgb"].shape == (10, 3, 3, 32, 32) and out["flow"].shape == (10, 3, 4, 32, 32)
    for i in range(5):
        assert torch.equal(out["rgb"][5 + i], out["rgb"][i].flip(-1))
        assert torch.equal(out["flow"][5 + i][:, 0::2], -out["flow"][i][:, 0::2].flip(-1))
        assert torch.equal(out["flow"][5 + i][:, 1::2], out["flow"][i][:, 1::2].flip(-1))
    # stored short side == scale_size: the crops are cut without resizing; the first is the top-left
    assert torch.equal(out["rgb"][0], normalize_rgb(rgb[..., :32, :32]))
    assert torch.equal(out["rgb"][4], normalize_rgb(rgb[..., 4:36, 10:42]))


def test_eval_crop_boxes():
    assert eval_crop_boxes(256, 340, 256, 224, 1) == [((16, 58, 224, 224), False)]
    three = [b for b, _ in eval_crop_boxes(256, 340, 256, 224, 3)]
    assert three == [(16, 0, 224, 224), (16, 58, 224, 224), (16, 116, 224, 224)]
    assert [b for b, _ in eval_crop_boxes(340, 256, 256, 224, 3)] == [(0, 16, 224, 224), (58, 16, 224, 224),
                                                                      (116, 16, 224, 224)]
    ten = eval_crop_boxes(256, 340, 256, 224, 10)
    assert [f for _, f in ten] == [False] * 5 + [True] * 5
    assert [b for b, _ in ten[:4]] == [(0, 0, 224, 224), (0, 116, 224, 224), (32, 0, 224, 224), (32, 116, 224, 224)]
    # stored twice as large: the same boxes in stored pixels
    assert eval_crop_boxes(512, 680, 256, 224, 1) == [((32, 116, 448, 448), False)]
    with pytest.raises(ValueError):
        eval_crop_boxes(256, 340, 256, 224, 5)


def test_multiscale_crop_sizes_offsets_and_bounds():
    g = torch.Generator().manual_seed(0)
    allowed = {256, 224, 192, 168}  # int(256 * s) for SCALES, 219..227 snapped to 224
    ranks = {s: i for i, s in enumerate(sorted(allowed, reverse=True))}
    tops, lefts = set(), set()
    for _ in range(3000):
        top, left, h, w = multiscale_crop_box(256, 340, 256, 224, SCALES, generator=g)
        assert h in allowed and w in allowed and abs(ranks[h] - ranks[w]) <= 1
        assert 0 <= top and top + h <= 256 and 0 <= left and left + w <= 340
        assert top % ((256 - h) // 4 or 1) == 0 and left % ((340 - w) // 4 or 1) == 0  # TSN's fixed grid
        if (h, w) == (192, 192):
            tops.add(top)
            lefts.add(left)
    assert tops == {0, 16, 32, 48, 64} and lefts == {0, 37, 74, 111, 148}
    # stored at twice the scale: boxes scale with it
    top, left, h, w = multiscale_crop_box(512, 680, 256, 224, SCALES, generator=torch.Generator().manual_seed(3))
    assert h % 2 == 0 and w % 2 == 0 and h // 2 in allowed and w // 2 in allowed


def ramp_clip(t=3, h=40, w=52, length=2):
    """RGB channel 0 and every flow-y channel carry x + 2t; RGB channel 1 carries y; flow-x is 128."""
    x = torch.arange(w).view(1, 1, w).expand(t, h, w) + 2 * torch.arange(t).view(t, 1, 1)
    y = torch.arange(h).view(1, h, 1).expand(t, h, w) * 3
    rgb = torch.stack([x, y, torch.full_like(x, 50)], 1).to(torch.uint8)
    flow = torch.full((t, 2 * length, h, w), 128, dtype=torch.uint8)
    flow[:, 1::2] = x.unsqueeze(1).to(torch.uint8)
    return {"rgb": rgb, "flow": flow}


def unnormalise_rgb(x):
    return x * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255 + torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) * 255


def test_train_geometry_shared_by_frames_and_streams():
    clip = ramp_clip()
    tr = TrainTransform(crop_size=32, scale_size=40)
    flips = set()
    for seed in range(40):
        out = tr(clip, torch.Generator().manual_seed(seed))
        assert out["rgb"].shape == (3, 3, 32, 32) and out["flow"].shape == (3, 4, 32, 32)
        assert out["rgb"].dtype == torch.float32 == out["flow"].dtype
        r = unnormalise_rgb(out["rgb"])
        fy = out["flow"][:, 1::2] * 127.5 + 127.5
        # the same crop, resize and flip in both streams: flow-y carries exactly the RGB ramp
        torch.testing.assert_close(fy[:, 0], r[:, 0], atol=1e-3, rtol=0)
        torch.testing.assert_close(fy[:, 1], r[:, 0], atol=1e-3, rtol=0)
        # ... and in every frame: frame t is frame 0 shifted by 2t
        for t in range(3):
            torch.testing.assert_close(r[t, 0] - r[0, 0], torch.full((32, 32), 2.0 * t), atol=1.01, rtol=0)
            torch.testing.assert_close(r[t, 1], r[0, 1], atol=1e-3, rtol=0)
        flipped = bool(r[0, 0, 0, 0] > r[0, 0, 0, -1])  # the x ramp runs backwards
        fx = out["flow"][:, 0::2]
        # flow-x was 128 (a small positive value): negated exactly when the clip was mirrored
        expected = (127.0 - 127.5) / 127.5 if flipped else (128.0 - 127.5) / 127.5
        assert torch.all(fx == expected)
        flips.add(flipped)
    assert flips == {True, False}


def test_train_transform_reproducible_by_generator():
    clip = ramp_clip()
    tr = TrainTransform(crop_size=32, scale_size=40, color_jitter=0.4)
    a = tr(clip, torch.Generator().manual_seed(5))
    b = tr(clip, torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in ("rgb", "flow"))
    outs = [tr(clip, torch.Generator().manual_seed(s))["rgb"] for s in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_color_jitter_rgb_only_and_same_for_all_frames():
    frame = torch.randint(0, 256, (1, 3, 20, 20), generator=torch.Generator().manual_seed(0)).float()
    rgb = frame.repeat(4, 1, 1, 1)
    out = color_jitter(rgb, 0.5, torch.Generator().manual_seed(1))
    assert not torch.equal(out, rgb) and out.min() >= 0 and out.max() <= 255
    assert all(torch.equal(out[0], out[t]) for t in range(4))
    assert torch.equal(color_jitter(rgb, 0.0), rgb)
    clip = ramp_clip()
    plain = TrainTransform(32, 40)(clip, torch.Generator().manual_seed(2))
    jittered = TrainTransform(32, 40, color_jitter=0.5)(clip, torch.Generator().manual_seed(2))
    assert torch.equal(plain["flow"], jittered["flow"]) and not torch.equal(plain["rgb"], jittered["rgb"])


def test_crop_resize_and_normalise_rgb():
    x = torch.full((2, 3, 30, 40), 200, dtype=torch.uint8)
    y = crop_resize(x, (2, 3, 25, 33), 16)
    assert y.shape == (2, 3, 16, 16) and y.dtype == torch.uint8 and torch.all(y == 200)
    z = torch.arange(2 * 3 * 30 * 40).remainder(256).to(torch.uint8).view(2, 3, 30, 40)
    assert torch.equal(crop_resize(z, (1, 2, 16, 16), 16), z[..., 1:17, 2:18])
    big = crop_resize(torch.full((1, 1, 100, 100), 7, dtype=torch.uint8), (0, 0, 100, 100), 20)  # area path
    assert torch.all(big == 7)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) * 255
    assert torch.allclose(normalize_rgb(mean.expand(3, 4, 4)), torch.zeros(3, 4, 4), atol=1e-6)
    assert torch.allclose(normalize_rgb(torch.full((3, 1, 1), 255, dtype=torch.uint8)).flatten(),
                          (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))


@pytest.mark.parametrize("views", [1, 3, 10])
def test_build_transform_test_shapes(views):
    cfg = DataConfig(crop_size=32, scale_size=40, test_crops=3)
    clip = ramp_clip(t=5)
    out = build_transform(cfg, train=False, views=views)(clip)
    assert out["rgb"].shape == (views, 5, 3, 32, 32) and out["flow"].shape == (views, 5, 4, 32, 32)
    assert build_transform(cfg, train=False).views == 3
    rgb_only = build_transform(cfg, train=False, views=views)({"rgb": clip["rgb"]})
    assert set(rgb_only) == {"rgb"} and torch.equal(rgb_only["rgb"], out["rgb"])


def test_build_transform_config_errors():
    with pytest.raises(ConfigError, match="data.test_crops"):
        build_transform(DataConfig(test_crops=5), train=False)
    with pytest.raises(ConfigError, match="data.scale_size"):
        build_transform(DataConfig(scale_size=200, crop_size=224), train=True)
    with pytest.raises(ValueError, match="one frame size"):
        TrainTransform(32, 40)({"rgb": ramp_clip()["rgb"], "flow": ramp_clip(w=60)["flow"]})
    with pytest.raises(ValueError, match="uint8"):
        EvalTransform(32, 40)({"rgb": ramp_clip()["rgb"].float()})


def test_hflip_false_in_the_config_turns_training_flips_off():
    assert build_transform(DataConfig(hflip=False), train=True).flip is False
    assert build_transform(DataConfig(), train=True).flip is True
