"""Tests of the machine description (``stfn.study.machine``) shared by the demo and the benchmarks."""

from __future__ import annotations

import torch

from stfn.runtime import cpu_supports_bf16
from stfn.study.machine import (
    benchmark_machine_info,
    cpu_flags,
    cpu_model,
    loadavg,
    machine_info,
    machine_line,
    usable_cores,
)


def test_machine_info_is_the_demo_record():
    info = machine_info()
    assert list(info) == ["cpu", "cores", "torch_threads", "torch", "python", "platform", "cuda"]
    assert info["cpu"] == cpu_model() and info["cpu"]
    assert info["cores"] == usable_cores() >= 1
    assert info["torch_threads"] == torch.get_num_threads() and info["torch"] == torch.__version__
    assert (info["cuda"] is None) == (not torch.cuda.is_available())


def test_benchmark_machine_info_records_what_timings_depend_on():
    info = benchmark_machine_info()
    assert info["cpus"] == usable_cores() and info["cpu"] == cpu_model()
    assert info["bf16_native"] == cpu_supports_bf16() and info["isa"]
    assert info["avx512"] == ("avx512f" in cpu_flags()) and info["date"].endswith("UTC")
    assert info["loadavg"] == [] or len(info["loadavg"]) == 3
    assert isinstance(info["env"], dict) and ("cuda_device" in info) == torch.cuda.is_available()
    assert all(v >= 0 for v in loadavg())


def test_machine_line_from_a_record():
    info = {"cpu": "Test CPU", "cpus": 2, "isa": "AVX2", "bf16_native": False, "torch": "2.x", "torch_threads": 2,
            "loadavg": [1.0, 0.5, 0.25], "env": {"OMP_NUM_THREADS": "1"}, "date": "2025-01-01 00:00 UTC"}
    assert machine_line(info) == ("Test CPU, 2 cores (AVX2, bf16 emulated), torch 2.x, 2 threads, "
                                  "OMP_NUM_THREADS=1; load 1.00/0.50/0.25; 2025-01-01 00:00 UTC")
    info.update(bf16_native=True, cuda_device="Test GPU", env={}, loadavg=[])
    assert machine_line(info) == ("Test CPU, 2 cores (AVX2, bf16 native), GPU Test GPU, torch 2.x, 2 threads; "
                                  "load ; 2025-01-01 00:00 UTC")
