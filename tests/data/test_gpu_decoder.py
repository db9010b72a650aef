"""``data.jpeg_decoder: nvjpeg``: GPU JPEG decoding where CUDA is, one sentence where it is not; the CPU
decoders unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset
from torchvision.io import write_jpeg

from stfn.config import ConfigError, DataConfig
from stfn.data import datasets
from stfn.data.datasets import GPU_DECODERS, JPEG_DECODERS, build_loader, check_decoder, decode_jpegs

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def jpeg(path: Path, gray: bool = False) -> Path:
    g = torch.Generator().manual_seed(0)
    img = (torch.full((1 if gray else 3, 24, 32), 128.0) + torch.randn(1 if gray else 3, 24, 32, generator=g) * 30)
    write_jpeg(img.clamp(0, 255).to(torch.uint8), str(path), quality=90)
    return path


def test_the_cpu_default_is_unchanged() -> None:
    assert DataConfig().jpeg_decoder == "opencv"
    assert JPEG_DECODERS[:3] == ("opencv", "torchvision", "pillow") and GPU_DECODERS == ("nvjpeg",)
    check_decoder("opencv")  # no error
    with pytest.raises(ConfigError, match=r"^config key 'data.jpeg_decoder' must be one of opencv, .*nvjpeg, got 'x'$"):
        check_decoder("x")


def test_nvjpeg_without_cuda_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = r"^config key 'data.jpeg_decoder' is 'nvjpeg', which decodes on a CUDA GPU .* use opencv on a CPU machine$"
    with pytest.raises(ConfigError, match=message):
        check_decoder("nvjpeg")
    with pytest.raises(ConfigError, match=r"^the JPEG decoder is 'nvjpeg'"):
        decode_jpegs([jpeg(tmp_path / "a.jpg").read_bytes()], False, "nvjpeg", tmp_path)
    cfg = DataConfig(jpeg_decoder="nvjpeg", root=str(tmp_path))
    with pytest.raises(ConfigError, match="data.jpeg_decoder' is 'nvjpeg'"):
        datasets.build_dataset(cfg, "train", ["rgb"], 5)  # refused before any file is read


class _Fake(Dataset):
    decoder = "nvjpeg"

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i):  # pragma: no cover - never iterated
        return {"x": torch.zeros(1)}


def test_gpu_decoding_workers_are_spawned_not_forked() -> None:
    loader = build_loader(_Fake(), 2, train=False, workers=2)
    assert loader.multiprocessing_context.get_start_method() == "spawn"  # CUDA does not survive a fork
    _Fake.decoder = "opencv"
    try:
        assert build_loader(_Fake(), 2, train=False, workers=2).multiprocessing_context is None
    finally:
        _Fake.decoder = "nvjpeg"


@needs_cuda
@pytest.mark.parametrize("gray", [False, True])
def test_nvjpeg_decodes_like_the_cpu(tmp_path: Path, gray: bool) -> None:
    path = jpeg(tmp_path / "a.jpg", gray)
    cpu = decode_jpegs([path.read_bytes()] * 3, gray, "opencv", path)
    gpu = decode_jpegs([path.read_bytes()] * 3, gray, "nvjpeg", path)
    assert gpu.shape == cpu.shape and gpu.dtype == torch.uint8 and gpu.device.type == "cpu"
    assert np.abs(gpu.int().numpy() - cpu.int().numpy()).mean() < 1.5  # IDCTs differ by a grey level at most
