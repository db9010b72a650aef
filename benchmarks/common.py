"""Shared helpers of the benchmark scripts: timing, the machine, peak memory, tables and JSON.

Every benchmark compares variants *in the same run*: :func:`interleaved` times them round-robin
(A, B, A, B, ...) so that a burst of load from other processes hits all of them alike, and reports
medians. Absolute figures on a shared machine are lower bounds; ratios are what to read. Each result
file records the machine, the load average before and after, the command and the date.

Results go to ``bench_results/<name>.json`` (git-ignored) through an atomic write.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stfn.machine import benchmark_machine_info as machine_info  # the package's one machine description
from stfn.machine import loadavg, machine_line, usable_cores
from stfn.runtime import sync  # one answer per machine, as the commands get

REPO = Path(__file__).resolve().parents[1]
#: The real files next to the clone (``<repo>/../shared``), or wherever ``$STFN_SHARED`` points; the
#: benchmarks fall back to generated inputs where they are absent.
SHARED = Path(os.environ.get("STFN_SHARED") or REPO.parent / "shared")
RESULTS_DIR = REPO / "bench_results"

__all__ = [
    "REPO",
    "RESULTS_DIR",
    "SHARED",
    "base_parser",
    "command_line",
    "current_rss_mb",
    "interleaved",
    "loadavg",
    "machine_info",
    "machine_line",
    "matmul_peak",
    "md_table",
    "peak_rss_mb",
    "run_child",
    "section",
    "setup_torch",
    "stats",
    "timed",
    "write_results",
]


# ---------------------------------------------------------------- timing

def timed(fn: Callable[[], Any], device: Any) -> float:
    """Seconds of one call of ``fn``."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, device: Any = "cpu", warmup: int = 1, calls: int = 1
) -> dict[str, list[float]]:
    """Time each of ``fns`` round-robin: ``warmup`` untimed calls each, then ``rounds`` rounds in which
    every function is timed over ``calls`` consecutive calls. Returns seconds per call, per round.

    The order within a round alternates (A B C, then C B A, ...), so no variant always runs right
    after the same neighbour.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            def many(f: Callable[[], Any] = fns[n]) -> None:
                for _ in range(calls):
                    f()
            out[n].append(timed(many, device) / calls)
    return out


def stats(seconds: list[float]) -> dict[str, float]:
    """Median, min, max and count of a list of timings (seconds)."""
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds), "n": len(seconds)}


def matmul_peak(dtype: Any, device: Any, seconds: float = 1.0, max_n: int = 4096) -> dict[str, Any]:
    """Best ``n x n @ n x n`` rate in GFLOP/s over sizes 256, 512, ... up to ``max_n``; a size is
    abandoned once one product takes longer than ``seconds`` (emulated bf16 is that slow)."""
    import torch

    best = {"gflops": 0.0, "n": 0}
    n = 256
    while n <= max_n:
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        c = torch.empty(n, n, dtype=dtype, device=device)
        first = timed(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), device)
        reps = max(2, min(20, int(seconds / max(first, 1e-6))))
        times = [timed(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), device) for _ in range(reps)]
        rate = 2 * n**3 / min(times) / 1e9
        if rate > best["gflops"]:
            best = {"gflops": rate, "n": n}
        if first * 8 > seconds * 4:  # the next size (8x the work) would take over 4 x seconds
            break
        n *= 2
    return best


# ---------------------------------------------------------------- memory

def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory of this process now, MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def run_child(argv: list[str], timeout: float = 600) -> dict[str, Any]:
    """Run ``python argv...`` in a fresh process (so its peak memory is its own) and parse the JSON
    object it prints on its last stdout line. Raises ``RuntimeError`` with its stderr on failure."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=_child_env())
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv[:1])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# ---------------------------------------------------------------- arguments, tables, results

def base_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every benchmark takes: ``--quick``, ``--out``, ``--threads``, ``--device``."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds: a smoke test, not a measurement")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON results")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all the cores this process may use)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return p


def setup_torch(threads: int) -> int:
    """Set torch's intra-op threads (0: every core this process may use); returns the count."""
    import torch

    n = threads or usable_cores()
    torch.set_num_threads(n)
    return n


def command_line() -> str:
    """The command that produced the results, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(REPO)
    return " ".join(["python", shlex.quote(str(script)), *map(shlex.quote, sys.argv[1:])])


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats get 3 significant digits unless already formatted."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], out_dir: Path = RESULTS_DIR,
                  load_before: list[float] | None = None) -> Path:
    """Write ``out_dir/<name>.json``: ``payload`` plus ``machine``, ``command``, ``loadavg_before/after``."""
    from stfn.fileio import atomic_write_json

    doc = {"benchmark": name, "command": command_line(), "machine": machine_info(),
           "loadavg_before": load_before if load_before is not None else [], "loadavg_after": loadavg(), **payload}
    path = Path(out_dir) / f"{name}.json"
    atomic_write_json(path, doc)
    return path


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    """Print a heading to stderr and the seconds the block took (progress for long runs)."""
    start = time.perf_counter()
    print(f"[{title}] ...", file=sys.stderr, flush=True)
    yield
    print(f"[{title}] {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
