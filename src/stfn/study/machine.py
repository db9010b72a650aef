"""The machine a result came from: the one description for ``stfn demo`` and the benchmarks.

- :func:`machine_info`: the short record of a demo run (``results.json``'s ``machine``, the table at
  the end of ``report.md``): CPU, usable cores, torch threads and version, Python, platform, GPU;
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

__all__ = ["benchmark_machine_info", "cpu_flags", "cpu_model", "loadavg", "machine_info", "machine_line",
           "usable_cores"]


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


def machine_info() -> dict[str, Any]:
    """CPU model, cores usable by this process, torch/python versions, accelerator if any."""
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": _gpu_name(),
    }


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
    return (f"{info['cpu']}, {info['cpus']} cores ({info['isa']}, bf16 "
            f"{'native' if info['bf16_native'] else 'emulated'}){gpu}, torch {info['torch']}, "
            f"{info['torch_threads']} threads{env}; load {load}; {info['date']}")
