"""RAFT optical flow (torchvision): shapes, batching, padding, weights errors, prepare workers' devices."""

from __future__ import annotations

import sys
from urllib.error import URLError

import numpy as np
import pytest
import torch
from torchvision.models._api import WeightsEnum

from stfn.data.video import flow as F
from stfn.data.video import raft
from stfn.data.video.raft import RaftFlow, worker_devices
from stfn.errors import StfnError
from suite_helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import flow_truth as truth  # noqa: E402  (the ground-truth fixture, shared with benchmarks/flow.py)

pytestmark = pytest.mark.timeout(120)


def test_raft_shapes_batching_and_padding() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    frames = truth.synthetic_pair("shift", size=(52, 36))[0]  # sides not multiples of 8
    frames = np.concatenate([frames, frames[:1]])
    one = RaftFlow("small", weights="random", device="cpu", iters=2, batch_size=1)
    two = RaftFlow("small", weights="random", device="cpu", iters=2, batch_size=2)
    two.net.load_state_dict(one.net.state_dict())
    a, b = one(frames), two(frames)
    assert a.shape == (2, 36, 52, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=1e-4)
    with pytest.raises(StfnError, match="RGB"):
        one(frames[..., 0])


def test_raft_weights_offline_is_a_clear_error(monkeypatch, tmp_path) -> None:
    def offline(self, *args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(StfnError, match="could not be downloaded"):
        F.create_estimator("raft", model="small", device="cpu")
    with pytest.raises(StfnError, match="cannot load RAFT-small weights"):
        F.create_estimator("raft", weights=str(tmp_path / "missing.pth"), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answers of a machine without CUDA")
def test_worker_devices_without_cuda() -> None:
    assert worker_devices("auto") == ("cpu", 0) and worker_devices("cpu") == ("cpu", 0)
    with pytest.raises(StfnError, match="no CUDA device"):
        worker_devices("cuda")
    with pytest.raises(StfnError, match="must be auto, cpu, cuda or cuda:N"):
        worker_devices("gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_worker_devices_spread_auto_over_the_gpus() -> None:
    assert worker_devices("auto") == ("cuda", torch.cuda.device_count())
    assert worker_devices("cuda:0") == ("cuda:0", 0)


def test_the_option_table_and_raft_agree() -> None:
    """The table in stfn.data.video.flow lists the models RAFT builds, and create_estimator fills every option
    from the table's defaults (RaftFlow itself has none)."""
    assert tuple(raft.MODELS) == F.RAFT_MODELS
    est = F.create_estimator("raft", weights="random", device="cpu")
    assert (est.iters, est.batch_size, str(est.device)) == (F.FLOW_OPTIONS["raft"]["iters"].default,
                                                           F.FLOW_OPTIONS["raft"]["batch_size"].default, "cpu")
