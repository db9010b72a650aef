"""Run every benchmark, one after the other, each in its own process; collect the tables.

Each script prints markdown tables on stdout and writes ``<out>/<name>.json``; this runner also
saves each script's stdout as ``<out>/<name>.md`` and writes ``<out>/report.md`` (every table with
its command, exit status, duration and the load average around it) and ``<out>/summary.json``.
Scripts that do not exist yet are reported as missing, not as failures; in ``--quick`` mode a script
without a ``--quick`` flag is skipped.

Usage::

    python benchmarks/run_all.py                          # everything (``make bench``), tens of minutes
    python benchmarks/run_all.py --quick                  # smoke test of every script
    python benchmarks/run_all.py --only model_overhead head_training
    python benchmarks/run_all.py --wait-load 1.0          # first wait (up to 45 min) for a quiet machine
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

from stfn.fileio import atomic_write_text

# name -> script, in the order they run (cheap, self-contained ones first).
BENCHMARKS = {
    "backbone_throughput": "backbone_throughput.py",
    "model_overhead": "model_overhead.py",
    "head_training": "head_training.py",
    "head_speed": "head_speed.py",
    "training_step": "training_step.py",
    "compile_breakeven": "compile_breakeven.py",
    "loader": "loader.py",
    "storage": "storage.py",
    "flow": "flow.py",
    "predict_latency": "predict_latency.py",
    "serve_load": "serve_load.py",
    "serve_soak": "serve_soak.py",
    "stress_run": "stress_run.py",
}
HERE = Path(__file__).resolve().parent


def script_flags(script: Path) -> str:
    """Text that names the flags ``script`` takes (to learn whether it has --quick, --out or --json).

    A script built on ``common.base_parser`` has ``--quick`` and ``--out``; for any other the answer
    is its ``--help`` (one interpreter start, so only when needed)."""
    if "base_parser(" in script.read_text(encoding="utf-8"):
        return "--quick --out"
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=common.REPO)
    return proc.stdout if proc.returncode == 0 else ""


def command_for(name: str, script: Path, out: Path, quick: bool, help_text: str) -> list[str] | None:
    """argv for one benchmark; None when ``quick`` and the script has no quick mode."""
    argv = [str(script.relative_to(common.REPO))]
    if quick:
        if "--quick" not in help_text:
            return None
        argv.append("--quick")
    if "--out" in help_text:
        argv += ["--out", str(out)]
    elif "--json" in help_text:
        argv += ["--json", str(out / f"{name}.json")]
    return argv


def wait_for_quiet(threshold: float, max_minutes: float) -> list[float]:
    """Poll the 1-minute load average every 60 s until it is below ``threshold`` (or time runs out)."""
    start = time.monotonic()
    while True:
        load = common.loadavg()
        if not load or load[0] < threshold or time.monotonic() - start > max_minutes * 60:
            return load
        print(f"load {load[0]:.2f} >= {threshold}: waiting ({(time.monotonic() - start) / 60:.0f} min so far)",
              file=sys.stderr, flush=True)
        time.sleep(60)


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    script = HERE / BENCHMARKS[name]
    if not script.is_file():
        return {"name": name, "status": "missing", "note": f"{script.name} does not exist yet"}
    argv = command_for(name, script, args.out, args.quick, script_flags(script))
    if argv is None:
        return {"name": name, "status": "skipped", "note": "no --quick mode"}
    cmd = "python " + " ".join(argv)
    print(f"\n=== {name}: {cmd}", file=sys.stderr, flush=True)
    load_before = common.loadavg()
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *argv], stdout=subprocess.PIPE, text=True, cwd=common.REPO,
                              timeout=args.timeout)
        rc, stdout = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as e:
        rc, stdout = -9, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    seconds = time.perf_counter() - start
    sys.stdout.write(stdout)
    sys.stdout.flush()
    atomic_write_text(args.out / f"{name}.md", stdout)
    status = "ok" if rc == 0 else ("timeout" if rc == -9 else "failed")
    return {"name": name, "status": status, "rc": rc, "command": cmd, "seconds": seconds,
            "loadavg_before": load_before, "loadavg_after": common.loadavg(), "stdout": stdout}


def report(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """Markdown: one section per benchmark with its command and tables."""
    lines = ["# Benchmark run", "", f"Machine: {common.machine_line(info)}", ""]
    for r in results:
        lines.append(f"## {r['name']}")
        lines.append("")
        if r["status"] in ("missing", "skipped"):
            lines += [f"{r['status']}: {r['note']}", ""]
            continue
        load = "/".join(f"{v:.2f}" for v in r["loadavg_before"])
        lines += [f"`{r['command']}` — {r['status']} in {r['seconds']:.0f} s, load before {load}", "",
                  r["stdout"].strip(), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="run each script's --quick smoke test")
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    p.add_argument("--skip", nargs="+", choices=list(BENCHMARKS), default=[], help="do not run these")
    p.add_argument("--out", type=Path, default=common.RESULTS_DIR, help="folder for JSON, tables and report.md")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per script")
    p.add_argument("--wait-load", type=float, default=0.0,
                   help="first wait until the 1-min load average is below this (0: do not wait)")
    p.add_argument("--max-wait", type=float, default=45.0, help="minutes to wait for --wait-load at most")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.wait_load > 0:
        wait_for_quiet(args.wait_load, args.max_wait)
    names = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
    results = [run_one(n, args) for n in names]
    info = common.machine_info()
    atomic_write_text(args.out / "report.md", report(results, info))
    summary = [{k: v for k, v in r.items() if k != "stdout"} for r in results]
    common.write_results("summary", {"quick": args.quick, "benchmarks": summary}, args.out)
    print("\n" + common.md_table(["benchmark", "status", "seconds"],
                                 [[r["name"], r["status"], f"{r.get('seconds', 0):.0f}"] for r in results]))
    print(f"\nreport: {args.out / 'report.md'}", file=sys.stderr)
    return 1 if any(r["status"] in ("failed", "timeout") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
