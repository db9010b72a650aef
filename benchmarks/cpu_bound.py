"""The theoretical arithmetic peak of this CPU: what no measured matmul rate can exceed.

    bound GFLOP/s = cores x FLOP/cycle/core x clock GHz
    FLOP/cycle/core = FMA pipes x (datapath bits / 32) fp32 lanes x 2 (multiply + add)
                      x 2 for bfloat16 where a dot-product instruction does two products per fp32 lane
                      (AVX512-BF16 ``VDPBF16PS``); x 1 for bfloat16 without it (emulated: converted to fp32)
    AMX-BF16 (bfloat16 only) = 16 x 16 x 32 multiply-adds per ``TDPBF16PS`` x 2 / 16 cycles per
                      instruction on the core's one TMUL unit = 1024 FLOP/cycle/core

The datapath is the width the FMA pipes really have, not the instruction width: Zen 4 (AMD family
25 with AVX-512) executes 512-bit instructions on 2 x 256-bit pipes ("double pumping"), so a Zen 4
core does 2 x 8 x 2 = 32 fp32 FLOP/cycle and 64 bf16 FLOP/cycle. Intel AVX-512 cores are counted with
2 x 512-bit FMA units (the server parts; a part with one unit does half: the bound stays an upper
bound), Zen 5 with 2 x 512, AVX2 + FMA cores with 2 x 256. Intel AMX (Sapphire Rapids and later)
multiplies bf16 tiles: a 16 x 32 by 32 x 16 ``TDPBF16PS`` every 16 cycles (Intel's optimisation
manual: 1024 bf16 FLOP per cycle per core, 2048 int8 OPs).

The clock is, in this order: ``clock_ghz`` given by the caller (``--clock-ghz``); the maximum clock
the kernel reports (``/sys/.../cpufreq/cpuinfo_max_freq``, else ``lscpu``'s "CPU max MHz"); a
*measured* clock; ``/proc/cpuinfo``'s MHz, which in a VM is often the nominal (TSC) clock below the
boost clock, so that bound may be exceeded legitimately and says so. Any value outside 0.3-6.5 GHz
(no shipping CPU runs there) is refused and the next source used, and the source text says so.

The measured clock times a chain of dependent 64-bit ``imul`` (3 cycles latency on every x86 core
since Core 2 and on every Zen), compiled with the system C compiler, about 0.2 s, in the thread's own
CPU time so that other processes sharing the core do not slow it down. A chain of ``add $1`` is *not*
a clock: Golden Cove-class cores (Sapphire Rapids) fold small-immediate adds at rename, so such a
chain ran at "10.3 GHz" there; no renamer folds a multiply.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["clock_ghz", "cpu_identity", "flops_per_cycle", "max_clock_ghz", "measure_clock_ghz", "sane_ghz",
           "theoretical_peak"]

CLOCK_RANGE_GHZ = (0.3, 6.5)  # outside it a reading is wrong, not a CPU
IMUL_LATENCY = 3  # cycles of a dependent 64-bit imul r, r

_CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
  struct timespec a, b; unsigned long n = 50000000UL, x = 1, m = 3;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
  for (unsigned long i = 0; i < n; i++)
    __asm__ volatile("imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0" : "+r"(x) : "r"(m));
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
  printf("%.4f\n", 4.0 * LATENCY * n / ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9) / 1e9);
  return x == 0;
}
""".replace("LATENCY", str(IMUL_LATENCY))


def cpu_identity(cpuinfo: str | None = None) -> dict[str, Any]:
    """Vendor, family, model name, flags and nominal MHz from ``/proc/cpuinfo`` text (first processor)."""
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
            "model": fields.get("model name", ""), "flags": set(fields.get("flags", "").split()),
            "mhz": num("cpu MHz")}


def flops_per_cycle(dtype: str, ident: dict[str, Any]) -> tuple[float | None, str]:
    """FLOP per cycle per core for ``dtype`` (``float32`` | ``bfloat16``) and the formula as text;
    ``(None, reason)`` where the formula does not apply (an ISA without FMA, another architecture)."""
    flags, vendor, family = ident["flags"], ident["vendor"], ident["family"]
    if dtype == "bfloat16" and {"amx_bf16", "amx_tile"} <= flags:
        return 1024.0, "AMX-BF16: 16 x 16 x 32 MACs x 2 per TDPBF16PS / 16 cycles"
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


def sane_ghz(ghz: float | None) -> bool:
    """Whether ``ghz`` can be a CPU clock at all (``CLOCK_RANGE_GHZ``)."""
    return ghz is not None and CLOCK_RANGE_GHZ[0] <= ghz <= CLOCK_RANGE_GHZ[1]


def measure_clock_ghz(timeout: float = 20.0) -> float | None:
    """The core clock measured by a dependent-``imul`` chain (x86 only); None without a C compiler."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None or platform.machine().lower() not in ("x86_64", "amd64"):
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


def max_clock_ghz(lscpu_text: str | None = None) -> tuple[float | None, str]:
    """The maximum clock the kernel reports: cpufreq's ``cpuinfo_max_freq``, else ``lscpu``'s
    "CPU max MHz" (``lscpu_text`` instead of running it); ``(None, "")`` where neither says (most VMs)."""
    try:
        khz = float(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        return khz / 1e6, "cpufreq max"
    except (OSError, ValueError):
        pass
    if lscpu_text is None:
        try:
            lscpu_text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            lscpu_text = ""
    for line in lscpu_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "CPU max MHz":
            try:
                return float(value) / 1000, "lscpu max MHz"
            except ValueError:
                break
    return None, ""


def clock_ghz(given: float | None = None, ident: dict[str, Any] | None = None) -> tuple[float | None, str]:
    """The clock to bound with and where it came from (see the module docstring for the order); a
    refused reading is named in the source text."""
    if given:
        return given, "given"
    refused: list[str] = []
    mhz = (ident or cpu_identity())["mhz"]
    nominal = (mhz / 1000 if mhz else None, "/proc/cpuinfo (nominal; boost may exceed it)")
    for fetch in (max_clock_ghz, lambda: (measure_clock_ghz(), "measured (dependent imul chain)"), lambda: nominal):
        ghz, source = fetch()
        if ghz is None:
            continue
        if sane_ghz(ghz):
            return ghz, source + "".join(f"; refused {r}" for r in refused)
        refused.append(f"{ghz:.2f} GHz from {source.split(' (')[0]}")
    return None, "unknown" + "".join(f"; refused {r}" for r in refused)


def theoretical_peak(dtype: str, cores: int, ghz: float | None, ident: dict[str, Any]) -> dict[str, Any]:
    """``{"gflops": bound or None, "formula": text}`` for ``dtype`` on ``cores`` cores at ``ghz``."""
    per_cycle, formula = flops_per_cycle(dtype, ident)
    if per_cycle is None or not ghz:
        return {"gflops": None, "formula": formula if per_cycle is None else "clock unknown"}
    return {"gflops": cores * per_cycle * ghz,
            "formula": f"{cores} cores x {per_cycle:.0f} FLOP/cycle ({formula}) x {ghz:.2f} GHz"}


def matmul_gflops(dtype: str, n: int = 2048, reps: int = 5) -> float:
    """Best rate of ``reps`` ``torch.mm`` of ``n x n`` ``dtype`` matrices on torch's threads (GFLOP/s)."""
    import torch  # only this measurement needs it

    a = torch.randn(n, n).to(getattr(torch, dtype))
    b = torch.randn(n, n).to(getattr(torch, dtype))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main(argv: list[str] | None = None) -> int:
    """Print the CPU, the clock and its source, and per dtype the bound and a measured matmul peak
    against it; exit 1 if a measured rate exceeds its bound (then the bound or the timing is wrong)."""
    p = argparse.ArgumentParser(description="The theoretical fp32/bf16 peak of this CPU and a matmul measured "
                                "against it (python benchmarks/cpu_bound.py).")
    p.add_argument("--clock-ghz", type=float, default=None, help="clock for the bound (default: see the docstring)")
    p.add_argument("--n", type=int, default=2048, help="matrix size of the measured matmul (default 2048)")
    p.add_argument("--no-measure", action="store_true", help="print the bounds only")
    args = p.parse_args(argv)
    import torch

    ident, cores = cpu_identity(), torch.get_num_threads()
    ghz, source = clock_ghz(args.clock_ghz, ident)
    print(f"CPU: {ident['model'] or platform.processor()} ({ident['vendor']}, family {ident['family']}), "
          f"{cores} torch threads")
    print(f"clock: {f'{ghz:.2f} GHz' if ghz else 'unknown'} ({source})")
    over = False
    for dtype in ("float32", "bfloat16"):
        bound = theoretical_peak(dtype, cores, ghz, ident)
        line = f"{dtype}: bound {bound['gflops']:.0f} GFLOP/s = {bound['formula']}" if bound["gflops"] \
            else f"{dtype}: no bound ({bound['formula']})"
        if not args.no_measure:
            rate = matmul_gflops(dtype, args.n)
            share = f" = {100 * rate / bound['gflops']:.0f}% of the bound" if bound["gflops"] else ""
            over |= bool(bound["gflops"] and rate > bound["gflops"])
            line += f"; measured torch.mm n={args.n}: {rate:.0f} GFLOP/s{share}"
        print(line)
    if over:
        print("a measured rate exceeds its bound: the clock or the timing is wrong", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
