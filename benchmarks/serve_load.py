"""Load test of ``stfn serve`` on loopback: N requests from C concurrent clients, bounded in count and time.

Starts ``stfn serve`` in a subprocess on a free 127.0.0.1 port with a random-weight checkpoint of the
``--preset`` (``tiny`` by default, or ``resnet18``: a two-stream STFN at 224 px) and ``--backend``
(default ``auto``, as a user runs it; the backend it chose is reported), ``--workers W --queue Q``, one
CPU thread per worker by default, then C client
threads post ``../shared/videos/test.avi`` (a 10 s synthetic AVI when absent) to ``/v1/predict``
until N have been answered. A 503 (every worker and queue place taken) is the server's back-pressure:
the client waits ``Retry-After`` and sends again; the run counts those answers. Checked: no request is
lost (every one ends in a 200), no 5xx other than the queue's 503, and the server's upload folder is
empty afterwards. Reported: latency percentiles (of the answered attempt, and end to end with the
retries) and throughput.

Usage::

    python benchmarks/serve_load.py                     # 50 requests, 8 clients, 2 workers, queue 4
    python benchmarks/serve_load.py --requests 200 --clients 16 --workers 1 --queue 8
    python benchmarks/serve_load.py --preset resnet18 --backend eager --workers 1 --threads 2
    python benchmarks/serve_load.py --quick             # 8 requests, 4 clients: a smoke test

Results: a markdown table on stdout and ``bench_results/serve_load.json``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, base_parser, loadavg, machine_info, machine_line, md_table, write_results  # noqa: E402
from predict_latency import SHARED_AVI, make_checkpoint, make_clip  # noqa: E402

BOUNDARY = "stfn-load-boundary"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(video: Path) -> bytes:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n3\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{video.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + video.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()


def start_server(ckpt: Path, port: int, args: Any, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "stfn", "serve", str(ckpt), "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(args.workers), "--queue", str(args.queue), "--threads", str(args.threads or 1),
           "--backend", args.backend]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"), env=env)  # noqa: SIM115
    deadline = time.monotonic() + 600  # a compiled resnet18 STFN warms up for 20-60 s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stfn serve exited: {(tmp / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("stfn serve did not answer /healthz within 600 s")


def post(port: int, body: bytes, timeout: float) -> tuple[int, float, int]:
    """One POST /v1/predict: (status, seconds, Retry-After or 0); status -1 when the connection failed."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/predict", body=body,
                     headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status == 200:
            json.loads(payload)["results"][0]["top"]  # a full answer, not just a status
        return resp.status, time.perf_counter() - start, int(resp.getheader("Retry-After") or 0)
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return -1, time.perf_counter() - start, 0
    finally:
        conn.close()


def run_clients(port: int, body: bytes, args: Any) -> tuple[list[dict[str, Any]], float]:
    """C threads take request numbers until N are done; each request is retried after a 503."""
    lock, results, next_id = threading.Lock(), [], [0]
    deadline = time.monotonic() + args.time_limit

    def client() -> None:
        while True:
            with lock:
                if next_id[0] >= args.requests:
                    return
                rid = next_id[0]
                next_id[0] += 1
            first, attempts, refused, statuses = time.perf_counter(), 0, 0, []
            while True:
                attempts += 1
                status, seconds, retry = post(port, body, args.request_timeout)
                statuses.append(status)
                if status != 503 or time.monotonic() > deadline:
                    break
                refused += 1
                time.sleep(min(retry or 1, 10))
            with lock:
                results.append({"id": rid, "status": status, "attempts": attempts, "refused": refused,
                                "seconds": seconds, "end_to_end": time.perf_counter() - first, "statuses": statuses})

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {"p50": q[49], "p90": q[89], "p99": q[98], "max": max(values), "mean": statistics.fmean(values)}


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="requests to answer")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=2, help="stfn serve --workers")
    parser.add_argument("--queue", type=int, default=4, help="stfn serve --queue")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds after which a 503 is not retried")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds per HTTP request")
    parser.add_argument("--preset", choices=["tiny", "resnet18"], default="tiny", help="the served checkpoint")
    parser.add_argument("--backend", choices=["auto", "eager", "compile", "onnx", "openvino"], default="auto",
                        help="stfn serve --backend")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.clients = 8, 4
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="stfn-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        video = SHARED_AVI if SHARED_AVI.is_file() else tmp / "clip.avi"
        if not SHARED_AVI.is_file():
            make_clip(video, 10.0)
        video_bytes = video.stat().st_size  # the clip goes with the temporary folder
        ckpt = make_checkpoint(args.preset, tmp)
        port = free_port()
        server = start_server(ckpt, port, args, tmp)
        try:
            results, wall = run_clients(port, multipart(video), args)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
                pool = json.loads(r.read())["pool"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
                chosen = json.loads(r.read())["models"][0]["settings"]["backend"]
            uploads_left = [str(p.name) for p in tmp.glob("stfn-serve-*/*")]
        finally:
            server.terminate()
            server.wait(30)
    ok = [r for r in results if r["status"] == 200]
    all_statuses = [s for r in results for s in r["statuses"]]
    server_errors = sorted({s for s in all_statuses if s >= 500 and s != 503})
    lost = args.requests - len(ok)
    lat, e2e = percentiles([r["seconds"] for r in ok]), percentiles([r["end_to_end"] for r in ok])
    refused = sum(r["refused"] for r in results)
    summary = {"requests": args.requests, "clients": args.clients, "workers": args.workers, "queue": args.queue,
               "threads_per_worker": args.threads or 1, "preset": args.preset, "backend_setting": args.backend,
               "backend": chosen, "video": video.name, "video_bytes": video_bytes,
               "answered_200": len(ok), "lost": lost, "server_errors_other_than_503": server_errors,
               "refused_503": refused, "wall_seconds": wall, "throughput_per_s": len(ok) / wall if wall else 0.0,
               "latency_seconds": lat, "end_to_end_seconds": e2e, "pool_after": pool, "uploads_left": uploads_left}
    print(f"stfn serve under load: {args.requests} requests of {video.name} ({video_bytes / 1e3:.0f} KB) "
          f"from {args.clients} clients, {args.preset} preset, --backend {args.backend} (ran {chosen}), "
          f"--workers {args.workers} --queue {args.queue}, {args.threads or 1} thread(s) per worker")
    print(md_table(["answered", "lost", "other 5xx", "503 (retried)", "wall s", "req/s",
                    "p50 s", "p90 s", "p99 s", "max s", "end-to-end p50 s", "end-to-end p99 s"],
                   [[len(ok), lost, len(server_errors), refused, wall, summary["throughput_per_s"],
                     lat.get("p50", 0.0), lat.get("p90", 0.0), lat.get("p99", 0.0), lat.get("max", 0.0),
                     e2e.get("p50", 0.0), e2e.get("p99", 0.0)]]))
    print(machine_line(machine_info()) + f"; load average before {'/'.join(f'{v:.2f}' for v in load_before)}")
    path = write_results("serve_load", {"settings": vars(args) | {"out": str(args.out)}, "summary": summary,
                                        "requests_detail": results}, args.out, load_before)
    print(f"wrote {path}", file=sys.stderr)
    failed = lost or server_errors or uploads_left or pool["held"]
    if failed:
        print(f"serve_load: FAILED: lost {lost}, other 5xx {server_errors}, uploads left {uploads_left}, "
              f"slots held {pool['held']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
