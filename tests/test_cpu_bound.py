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


def cpuinfo(vendor: str, family: int, model: str, mhz: str, flags: str) -> str:
    """A ``/proc/cpuinfo`` text of two processors in the kernel's layout (the second must be ignored)."""
    first = (f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel name\t: {model}\n"
             f"cpu MHz\t\t: {mhz}\nflags\t\t: {flags}\n")
    return first + "\n" + first.replace("processor\t: 0", "processor\t: 1").replace(vendor, "Other")


# The three CPU kinds the suite runs on (flags abridged to what the formula reads, plus neighbours).
ZEN4 = cpuinfo("AuthenticAMD", 25, "AMD EPYC 9B14", "2596.126", "fpu avx2 fma avx512f avx512_bf16")
AVX2 = cpuinfo("GenuineIntel", 6, "Intel(R) Xeon(R) CPU @ 2.20GHz", "2200.000", "fpu sse4_2 avx avx2 fma")
AMX = cpuinfo("GenuineIntel", 6, "Intel(R) Xeon(R) Processor", "2100.000",
              "fpu avx2 fma avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8")


def ident(vendor: str = "GenuineIntel", family: int = 6, flags: str = "avx2 fma") -> dict:
    return {"vendor": vendor, "family": family, "flags": set(flags.split()), "mhz": 2000.0}


def test_cpu_identity_reads_the_first_processor() -> None:
    got = cpu_bound.cpu_identity(ZEN4)
    assert got == {"vendor": "AuthenticAMD", "family": 25, "model": "AMD EPYC 9B14", "mhz": 2596.126,
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


@pytest.mark.parametrize(("text", "fp32", "bf16", "bf16_formula"), [
    (AVX2, 32, 32, "AVX2: 2 FMA pipes x 8 fp32 lanes x 2 (bf16 emulated in fp32)"),
    (ZEN4, 32, 64, "Zen 4 (AVX-512 double-pumped): 2 FMA pipes x 8 fp32 lanes x 2 x 2 (VDPBF16PS)"),
    (AMX, 64, 1024, "AMX-BF16: 16 x 16 x 32 MACs x 2 per TDPBF16PS / 16 cycles"),
])
def test_the_three_cpu_kinds_from_their_cpuinfo(text: str, fp32: int, bf16: int, bf16_formula: str) -> None:
    """AMX's TMUL does a 16x32 by 32x16 bf16 tile product (8192 multiply-adds) per 16 cycles: 1024 FLOP
    per cycle per core, 16x an AVX-512 FMA pair's fp32 rate; the formula is printed like the others."""
    who = cpu_bound.cpu_identity(text)
    assert cpu_bound.flops_per_cycle("float32", who)[0] == fp32
    assert cpu_bound.flops_per_cycle("bfloat16", who) == (bf16, bf16_formula)
    got = cpu_bound.theoretical_peak("bfloat16", 2, 3.8, who)
    assert got["gflops"] == pytest.approx(2 * bf16 * 3.8)
    assert got["formula"] == f"2 cores x {bf16} FLOP/cycle ({bf16_formula}) x 3.80 GHz"


def test_no_bound_where_the_formula_does_not_apply() -> None:
    assert cpu_bound.flops_per_cycle("bfloat16", ident(flags="amx_bf16"))[0] is None  # no tiles, no FMA flags
    assert cpu_bound.flops_per_cycle("float32", ident(flags="sse2"))[0] is None
    assert cpu_bound.theoretical_peak("float32", 2, None, ident())["gflops"] is None


def test_theoretical_peak_is_cores_times_flops_times_clock() -> None:
    got = cpu_bound.theoretical_peak("bfloat16", 2, 3.5, ident("AuthenticAMD", 25, "avx2 fma avx512f avx512_bf16"))
    assert got["gflops"] == pytest.approx(2 * 64 * 3.5)  # the Zen 4 estimate: under 500 GFLOP/s
    assert "2 cores x 64 FLOP/cycle" in got["formula"] and "3.50 GHz" in got["formula"]


def no_max_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """No cpufreq and no "CPU max MHz" in lscpu, as in most VMs."""
    monkeypatch.setattr(cpu_bound, "max_clock_ghz", lambda: (None, ""))


def test_clock_prefers_the_given_value_then_the_max_then_a_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cpu_bound.clock_ghz(3.1) == (3.1, "given")
    monkeypatch.setattr(cpu_bound, "max_clock_ghz", lambda: (3.7, "cpufreq max"))
    monkeypatch.setattr(cpu_bound, "measure_clock_ghz", lambda: 3.5)
    assert cpu_bound.clock_ghz(None, cpu_bound.cpu_identity(AMX)) == (3.7, "cpufreq max")
    no_max_clock(monkeypatch)
    assert cpu_bound.clock_ghz(None, cpu_bound.cpu_identity(AMX)) == (3.5, "measured (dependent imul chain)")
    monkeypatch.setattr(cpu_bound, "measure_clock_ghz", lambda: None)
    ghz, source = cpu_bound.clock_ghz(None, cpu_bound.cpu_identity(ZEN4))
    assert ghz == pytest.approx(2.596126) and "nominal" in source


@pytest.mark.parametrize("text", [AVX2, ZEN4, AMX])
def test_an_impossible_clock_is_refused_not_used(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """The issue's folded ``add`` chain read 10.31 GHz on Sapphire Rapids: refused, named, next source."""
    no_max_clock(monkeypatch)
    monkeypatch.setattr(cpu_bound, "measure_clock_ghz", lambda: 10.31)
    who = cpu_bound.cpu_identity(text)
    ghz, source = cpu_bound.clock_ghz(None, who)
    assert ghz == pytest.approx(who["mhz"] / 1000) and source.startswith("/proc/cpuinfo")
    assert "refused 10.31 GHz from measured" in source
    monkeypatch.setattr(cpu_bound, "max_clock_ghz", lambda: (0.05, "cpufreq max"))  # a kHz/MHz mix-up
    monkeypatch.setattr(cpu_bound, "measure_clock_ghz", lambda: 3.4)
    assert cpu_bound.clock_ghz(None, who) == (3.4, "measured (dependent imul chain); refused 0.05 GHz from cpufreq max")
    assert not cpu_bound.sane_ghz(6.6) and not cpu_bound.sane_ghz(0.2) and cpu_bound.sane_ghz(5.7)


def test_lscpu_max_mhz_is_a_max_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_bound.Path, "read_text", lambda self: (_ for _ in ()).throw(OSError()))
    lscpu = "Model name:            AMD Ryzen 9 7950X\nCPU max MHz:           5881.0000\nCPU min MHz: 545.0\n"
    assert cpu_bound.max_clock_ghz(lscpu) == (pytest.approx(5.881), "lscpu max MHz")
    assert cpu_bound.max_clock_ghz("Model name: Intel(R) Xeon(R) Processor\n") == (None, "")


def test_a_real_matmul_stays_under_the_bound() -> None:
    ghz = cpu_bound.measure_clock_ghz()
    if ghz is None:
        pytest.skip("no C compiler to measure the clock")
    assert cpu_bound.sane_ghz(ghz), ghz  # a folded probe (10.3 GHz on Sapphire Rapids) fails here
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
