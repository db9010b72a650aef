"""The theoretical CPU peak of ``benchmarks/cpu_bound.py``: the formula per ISA, the cpuinfo parsing,
the clock's sources, and that a real matmul on this machine stays under the bound."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cpu_bound  # noqa: E402

ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\ncpu MHz\t\t: 2596.126\n" \
       "flags\t\t: fpu avx2 fma avx512f avx512_bf16\n\nprocessor\t: 1\nvendor_id\t: Other\n"


def ident(vendor: str = "GenuineIntel", family: int = 6, flags: str = "avx2 fma") -> dict:
    return {"vendor": vendor, "family": family, "flags": set(flags.split()), "mhz": 2000.0}


def test_cpu_identity_reads_the_first_processor() -> None:
    got = cpu_bound.cpu_identity(ZEN4)
    assert got == {"vendor": "AuthenticAMD", "family": 25, "mhz": 2596.126,
                   "flags": {"fpu", "avx2", "fma", "avx512f", "avx512_bf16"}}
    assert cpu_bound.cpu_identity("")["family"] is None


@pytest.mark.parametrize(("who", "fp32", "bf16"), [
    (ident("AuthenticAMD", 25, "avx2 fma avx512f avx512_bf16"), 32, 64),  # Zen 4: 2 x 256-bit, VDPBF16PS
    (ident("AuthenticAMD", 25, "avx2 fma"), 32, 32),  # Zen 3: AVX2 only, bf16 emulated
    (ident("GenuineIntel", 6, "avx2 fma avx512f avx512_bf16"), 64, 128),  # Cooper Lake: 2 x 512-bit
    (ident("GenuineIntel", 6, "avx2 fma avx512f"), 64, 64),  # Skylake-SP: bf16 emulated
])
def test_flops_per_cycle_follows_the_vector_width(who: dict, fp32: int, bf16: int) -> None:
    assert cpu_bound.flops_per_cycle("float32", who)[0] == fp32
    assert cpu_bound.flops_per_cycle("bfloat16", who)[0] == bf16


def test_no_bound_where_the_formula_does_not_apply() -> None:
    assert cpu_bound.flops_per_cycle("bfloat16", ident(flags="avx512f amx_bf16 amx_tile"))[0] is None
    assert cpu_bound.flops_per_cycle("float32", ident(flags="sse2"))[0] is None
    assert cpu_bound.theoretical_peak("float32", 2, None, ident())["gflops"] is None


def test_theoretical_peak_is_cores_times_flops_times_clock() -> None:
    got = cpu_bound.theoretical_peak("bfloat16", 2, 3.5, ident("AuthenticAMD", 25, "avx2 fma avx512f avx512_bf16"))
    assert got["gflops"] == pytest.approx(2 * 64 * 3.5)  # the Zen 4 estimate: under 500 GFLOP/s
    assert "2 cores x 64 FLOP/cycle" in got["formula"] and "3.50 GHz" in got["formula"]


def test_clock_prefers_the_given_value_then_a_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cpu_bound.clock_ghz(3.1) == (3.1, "given")
    monkeypatch.setattr(cpu_bound, "measure_clock_ghz", lambda: None)
    monkeypatch.setattr(cpu_bound.Path, "read_text", lambda self: (_ for _ in ()).throw(OSError()))
    ghz, source = cpu_bound.clock_ghz(None, ident())
    assert ghz == 2.0 and "nominal" in source


def test_a_real_matmul_stays_under_the_bound() -> None:
    ghz = cpu_bound.measure_clock_ghz()
    if ghz is None:
        pytest.skip("no C compiler to measure the clock")
    assert 0.5 < ghz < 7
    who = cpu_bound.cpu_identity()
    bound = cpu_bound.theoretical_peak("float32", 1, ghz * 1.1, who)["gflops"]  # 10%: the clock may rise
    if bound is None:
        pytest.skip("no bound for this CPU")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(512, 512), torch.randn(512, 512)
        torch.mm(a, b)
        start = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        rate = 10 * 2 * 512**3 / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_num_threads(threads)
    assert 0 < rate < bound
