"""The machine a result came from: the one description for ``stfn demo`` and the benchmarks.

- :func:`machine_info`: the short record of a demo or compare run (``results.json``'s ``machine``, the
  table at the end of ``report.md``): CPU, usable cores, torch threads and version, Python, platform,
  GPU, the instruction set bfloat16 runs on and the load average at the start and the end;
- :func:`machine_caption`: that record as the words after "on" in a report's first line;
- :func:`benchmark_machine_info`: the record of a benchmark result, with what its timings depend on
  (ISA, bfloat16 in hardware, memory, load average, OpenMP settings, date);
- :func:`machine_line`: a benchmark record as one caption line.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Any

import torch

from stfn.runtime import cpu_supports_bf16

__all__ = ["benchmark_machine_info", "bf16_isa", "cpu_flags", "cpu_model", "loadavg", "machine_caption",
           "machine_info", "machine_line", "usable_cores"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``: ``avx512f``, ``amx_tile``, ...); empty where unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_isa(flags: set[str] | None = None) -> str:
    """The instructions bfloat16 matmuls run on here: ``"AMX"`` (Intel's tile unit, Sapphire Rapids and
    later), ``"AVX512-BF16"`` (Zen 4, Cooper Lake) or ``"AVX2 emulation"`` / ``"AVX-512 emulation"``
    (converted to fp32); the digits of a trained model differ between these."""
    flags = cpu_flags() if flags is None else flags
    if {"amx_bf16", "amx_tile"} <= flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return "AVX-512 emulation" if "avx512f" in flags else "AVX2 emulation"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (``/proc/loadavg``); ``[]`` where unavailable."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _gpu_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine_info(load_start: list[float] | None = None) -> dict[str, Any]:
    """CPU model, cores usable by this process, torch/python versions, accelerator if any, bfloat16's
    instruction set, and the 1/5/15-minute load averages at ``load_start`` (taken by the caller when the
    run began) and now."""
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": _gpu_name(),
        "bf16": bf16_isa(),
        "load_start": load_start if load_start is not None else [],
        "load_end": loadavg(),
    }


def machine_caption(m: dict[str, Any]) -> str:
    """``"Intel Xeon (2 cores, bf16 on AMX, torch 2.x, load 0.50 → 2.10)"`` from :func:`machine_info`
    (records written before bf16 and load were kept print without them)."""
    load = " → ".join(f"{v[0]:.2f}" for v in (m.get("load_start"), m.get("load_end")) if v)
    return (f"{m['cpu']} ({m['cores']} cores{', bf16 on ' + m['bf16'] if m.get('bf16') else ''}, torch {m['torch']}"
            f"{', GPU ' + m['cuda'] if m.get('cuda') else ''}{', load ' + load if load else ''})")


def benchmark_machine_info() -> dict[str, Any]:
    """What benchmark numbers were measured on: CPU, ISA, threads, libraries, GPU, memory, load, date."""
    flags = cpu_flags()
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpus": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "avx512": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_tile" in flags,
        "bf16_native": cpu_supports_bf16(),
        "bf16_isa": bf16_isa(flags),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg": loadavg(),
        # OpenMP's spin-waiting makes multi-threaded torch 5-10x slower on a loaded machine; record it.
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS") if k in os.environ},
    }
    try:
        import torchvision  # optional here: only its version is recorded

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    gpu = _gpu_name()
    if gpu:
        info["cuda_device"] = gpu
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line for a table caption from :func:`benchmark_machine_info`: CPU, cores, ISA, bf16, torch, load."""
    load = "/".join(f"{v:.2f}" for v in info.get("loadavg", []))
    gpu = f", GPU {info['cuda_device']}" if info.get("cuda_device") else ""
    env = "".join(f", {k}={v}" for k, v in info.get("env", {}).items())
    bf16 = info.get("bf16_isa") or ("native" if info["bf16_native"] else "emulated")
    return (f"{info['cpu']}, {info['cpus']} cores ({info['isa']}, bf16 on {bf16}){gpu}, torch {info['torch']}, "
            f"{info['torch_threads']} threads{env}; load {load}; {info['date']}")
