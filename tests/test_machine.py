"""Tests of the machine description (``stfn.machine``) shared by the demo and the benchmarks."""

from __future__ import annotations

import pytest
import torch

from stfn.machine import (
    benchmark_machine_info,
    bf16_isa,
    cpu_flags,
    cpu_model,
    loadavg,
    machine_caption,
    machine_info,
    machine_line,
    usable_cores,
)
from stfn.runtime import cpu_supports_bf16


def test_machine_info_is_the_demo_record():
    info = machine_info()
    assert list(info) == ["cpu", "cores", "torch_threads", "torch", "python", "platform", "cuda", "bf16",
                          "load_start", "load_end"]
    assert info["bf16"] == bf16_isa() and info["load_start"] == [] and len(info["load_end"]) in (0, 3)
    assert machine_info([1.5, 1.0, 0.5])["load_start"] == [1.5, 1.0, 0.5]
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
    assert machine_line(info) == ("Test CPU, 2 cores (AVX2, bf16 on emulated), torch 2.x, 2 threads, "
                                  "OMP_NUM_THREADS=1; load 1.00/0.50/0.25; 2025-01-01 00:00 UTC")
    info.update(bf16_native=True, cuda_device="Test GPU", env={}, loadavg=[])
    assert machine_line(info) == ("Test CPU, 2 cores (AVX2, bf16 on native), GPU Test GPU, torch 2.x, 2 threads; "
                                  "load ; 2025-01-01 00:00 UTC")
    info["bf16_isa"] = "AMX"
    assert "(AVX2, bf16 on AMX)" in machine_line(info)


@pytest.mark.parametrize(("flags", "isa"), [
    ("avx2 fma", "AVX2 emulation"),  # Zen 3, Haswell..Ice Lake client: bf16 converted to fp32
    ("avx2 fma avx512f", "AVX-512 emulation"),  # Skylake-SP
    ("avx2 fma avx512f avx512_bf16", "AVX512-BF16"),  # Zen 4, Cooper Lake
    ("avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8", "AMX"),  # Sapphire Rapids and later
])
def test_bf16_isa_names_the_instructions_bf16_runs_on(flags: str, isa: str) -> None:
    assert bf16_isa(set(flags.split())) == isa


def test_machine_caption_names_cpu_bf16_and_load() -> None:
    m = {"cpu": "AMD EPYC 9B14", "cores": 2, "torch": "2.x", "cuda": None, "bf16": "AVX512-BF16",
         "load_start": [0.5, 0.4, 0.3], "load_end": [2.1, 1.0, 0.5]}
    assert machine_caption(m) == "AMD EPYC 9B14 (2 cores, bf16 on AVX512-BF16, torch 2.x, load 0.50 → 2.10)"
    old = {"cpu": "X", "cores": 4, "torch": "2.x", "cuda": "H100"}  # a results.json from before
    assert machine_caption(old) == "X (4 cores, torch 2.x, GPU H100)"
