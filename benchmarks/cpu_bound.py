"""The theoretical arithmetic peak of this CPU: what no measured matmul rate can exceed.

    bound GFLOP/s = cores x FLOP/cycle/core x clock GHz
    FLOP/cycle/core = FMA pipes x (datapath bits / 32) fp32 lanes x 2 (multiply + add)
                      x 2 for bfloat16 where a dot-product instruction does two products per fp32 lane
                      (AVX512-BF16 ``VDPBF16PS``); x 1 for bfloat16 without it (emulated: converted to fp32)

The datapath is the width the FMA pipes really have, not the instruction width: Zen 4 (AMD family
25 with AVX-512) executes 512-bit instructions on 2 x 256-bit pipes ("double pumping"), so a Zen 4
core does 2 x 8 x 2 = 32 fp32 FLOP/cycle and 64 bf16 FLOP/cycle. Intel AVX-512 cores are counted with
2 x 512-bit FMA units (the server parts; a part with one unit does half: the bound stays an upper
bound), Zen 5 with 2 x 512, AVX2 + FMA cores with 2 x 256. With AMX tiles the bf16 bound is not
computed (the tile unit's rate is not a vector-width formula).

The clock is, in this order: ``clock_ghz`` given by the caller (``--clock-ghz``); the cpufreq
maximum (``/sys/.../cpuinfo_max_freq``); a *measured* clock (a chain of dependent integer adds, one
per cycle, compiled with the system C compiler, about 0.3 s, timed in the thread's own CPU time so
that other processes sharing the core do not slow it down); ``/proc/cpuinfo``'s MHz, which in a VM
is often the nominal (TSC) clock below the boost clock, so that bound may be exceeded legitimately
and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["clock_ghz", "cpu_identity", "flops_per_cycle", "measure_clock_ghz", "theoretical_peak"]

_CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
  struct timespec a, b; unsigned long n = 100000000UL, x = 0;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
  for (unsigned long i = 0; i < n; i++)
    __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
  printf("%.4f\n", 4.0 * n / ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9) / 1e9);
  return x == 0;
}
"""


def cpu_identity(cpuinfo: str | None = None) -> dict[str, Any]:
    """Vendor, family, model, flags and nominal MHz from ``/proc/cpuinfo`` text (first processor)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    def num(key: str) -> float | None:
        try:
            return float(fields[key])
        except (KeyError, ValueError):
            return None
    family = num("cpu family")
    return {"vendor": fields.get("vendor_id", ""), "family": int(family) if family is not None else None,
            "flags": set(fields.get("flags", "").split()), "mhz": num("cpu MHz")}


def flops_per_cycle(dtype: str, ident: dict[str, Any]) -> tuple[float | None, str]:
    """FLOP per cycle per core for ``dtype`` (``float32`` | ``bfloat16``) and the formula as text;
    ``(None, reason)`` where the formula does not apply (AMX, an ISA without FMA, another architecture)."""
    flags, vendor, family = ident["flags"], ident["vendor"], ident["family"]
    if dtype == "bfloat16" and "amx_bf16" in flags:
        return None, "AMX tiles: no vector-width formula"
    if "avx512f" in flags:
        if vendor == "AuthenticAMD" and family == 25:
            pipes, bits, what = 2, 256, "Zen 4 (AVX-512 double-pumped)"
        else:
            pipes, bits, what = 2, 512, "AVX-512"
    elif "avx2" in flags and "fma" in flags:
        pipes, bits, what = 2, 256, "AVX2"
    else:
        return None, "no AVX2/AVX-512 FMA flags: bound not computed"
    fp32 = pipes * (bits // 32) * 2
    base = f"{what}: {pipes} FMA pipes x {bits // 32} fp32 lanes x 2"
    if dtype == "float32":
        return float(fp32), base
    if "avx512_bf16" in flags:
        return float(2 * fp32), base + " x 2 (VDPBF16PS)"
    return float(fp32), base + " (bf16 emulated in fp32)"


def measure_clock_ghz(timeout: float = 20.0) -> float | None:
    """The core clock measured by a dependent-add chain (one add per cycle); None without a C compiler."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "clock.c", Path(tmp) / "clock"
        src.write_text(_CLOCK_C)
        try:
            subprocess.run([cc, "-O1", str(src), "-o", str(exe)], check=True, capture_output=True, timeout=timeout)
            runs = [float(subprocess.run([str(exe)], check=True, capture_output=True, text=True,
                                         timeout=timeout).stdout) for _ in range(3)]
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
    return max(runs)  # the least disturbed run: interrupts only ever slow the chain down


def clock_ghz(given: float | None = None, ident: dict[str, Any] | None = None) -> tuple[float | None, str]:
    """The clock to bound with and where it came from (see the module docstring for the order)."""
    if given:
        return given, "given"
    try:
        khz = float(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        return khz / 1e6, "cpufreq max"
    except (OSError, ValueError):
        pass
    measured = measure_clock_ghz()
    if measured:
        return measured, "measured"
    mhz = (ident or cpu_identity())["mhz"]
    return (mhz / 1000, "/proc/cpuinfo (nominal; boost may exceed it)") if mhz else (None, "unknown")


def theoretical_peak(dtype: str, cores: int, ghz: float | None, ident: dict[str, Any]) -> dict[str, Any]:
    """``{"gflops": bound or None, "formula": text}`` for ``dtype`` on ``cores`` cores at ``ghz``."""
    per_cycle, formula = flops_per_cycle(dtype, ident)
    if per_cycle is None or not ghz:
        return {"gflops": None, "formula": formula if per_cycle is None else "clock unknown"}
    return {"gflops": cores * per_cycle * ghz,
            "formula": f"{cores} cores x {per_cycle:.0f} FLOP/cycle ({formula}) x {ghz:.2f} GHz"}
