"""Soak test of ``stfn serve`` on loopback: a few hundred mixed good and hostile requests from several
client threads, bounded in count and time (issue 28).

Starts ``stfn serve`` in a subprocess on a free 127.0.0.1 port with a random-weight ``tiny`` checkpoint,
``--workers W --queue Q --max-upload-mb 1``, one CPU thread per worker by default. C client threads
take request numbers until N are done; request ``i`` is of the kind ``KINDS[i % len(KINDS)]`` (so
every kind is sent about equally often, half of them good): a good prediction of
``../shared/videos/test.avi`` (a 10 s synthetic AVI when absent), text, random bytes, a PNG, an empty
file, a truncated AVI, a wrong field name, a body that is not multipart, a field that names a path, an
unknown model, a 2 MB upload with ``Content-Length``, a chunked 16 MB stream, and a client that
disconnects half-way through its upload. A 503 (every slot taken) is back-pressure: the client waits
``Retry-After`` and sends again, until ``--time-limit``.

Checked (exit 1 when any fails): every good request answered 200 with the reference answer (the top
classes and probabilities the server gave test.avi before the soak, to 1e-4); every hostile one
answered with its expected 4xx (never a 5xx other than 503); no pool slot held and no upload left
afterwards; the server's resident memory (``VmRSS`` of ``/proc/<pid>/status``) grown by at most
``--rss-growth-mb`` from after the reference request to the end.

Usage::

    python benchmarks/serve_soak.py                 # 300 requests, 8 clients, 2 workers, queue 2
    python benchmarks/serve_soak.py --requests 600 --clients 12
    python benchmarks/serve_soak.py --quick         # 42 requests, 4 clients: a smoke test

Results: a markdown table on stdout and ``bench_results/serve_soak.json``.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, base_parser, loadavg, machine_info, machine_line, md_table, write_results  # noqa: E402
from predict_latency import SHARED_AVI, make_checkpoint, make_clip  # noqa: E402

B = "soak"  # the multipart boundary
CT = f"multipart/form-data; boundary={B}"
#: kind -> the status the server must answer it with (None: the client hangs up, there is no answer).
KINDS: dict[str, int | None] = {
    "good": 200, "text": 422, "good_2": 200, "random": 422, "good_3": 200, "png": 422, "good_4": 200,
    "empty": 422, "good_5": 200, "truncated": 422, "good_6": 200, "wrong_field": 422, "good_7": 200,
    "not_multipart": 422, "good_8": 200, "path_field": 422, "good_9": 200, "unknown_model": 404,
    "good_10": 200, "too_big": 413, "good_11": 200, "chunked_too_big": 413, "good_12": 200, "disconnect": None,
}


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    fn = f'; filename="{filename}"' if filename else ""
    return f'--{B}\r\nContent-Disposition: form-data; name="{name}"{fn}\r\n\r\n'.encode() + value + b"\r\n"


def bodies(video: bytes) -> dict[str, tuple[bytes, str]]:
    """kind -> (body, content type) of each kind sent whole."""
    import cv2
    import numpy as np

    end = f"--{B}--\r\n".encode()
    png = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    files = {"good": video, "text": b"not a video\n" * 100, "random": np.random.default_rng(0).bytes(40_000),
             "png": png, "empty": b"", "truncated": video[: len(video) // 2]}
    out = {k: (part("top_k", b"3") + part("file", v, f"{k}.avi") + end, CT) for k, v in files.items()}
    out["wrong_field"] = (part("video", video, "clip.avi") + end, CT)
    out["not_multipart"] = (video, "video/x-msvideo")
    out["path_field"] = (part("path", b"/etc/passwd") + part("file", video, "clip.avi") + end, CT)
    out["unknown_model"] = (part("model", b"../../etc/passwd") + part("file", video, "clip.avi") + end, CT)
    return out


def start_server(ckpt: Path, port: int, args: Any, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "stfn", "serve", str(ckpt), "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(args.workers), "--queue", str(args.queue), "--threads", str(args.threads or 1),
           "--max-upload-mb", "1", "--backend", "eager", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"), env=env)  # noqa: SIM115
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stfn serve exited: {(tmp / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("stfn serve did not answer /healthz within 120 s")


def rss_mb(pid: int) -> float:
    """``VmRSS`` of ``/proc/<pid>/status``, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def post(port: int, body: bytes, content_type: str, timeout: float) -> tuple[int, bytes, int]:
    """One POST /v1/predict: (status, answer, Retry-After or 0); -1 when the connection failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        return resp.status, resp.read(), int(resp.getheader("Retry-After") or 0)
    except (OSError, http.client.HTTPException):
        return -1, b"", 0
    finally:
        conn.close()


def oversized(port: int, megabytes: int, chunked: bool, timeout: float) -> tuple[int, bytes, int]:
    """An upload of ``megabytes`` of zeros, announced by ``Content-Length`` or sent chunked (no length),
    whose sending stops as soon as the server answers or stops reading."""
    size = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {megabytes * 2**20 + 200}"
    head = f'--{B}\r\nContent-Disposition: form-data; name="file"; filename="big.avi"\r\n\r\n'.encode()
    piece = b"\0" * 65536
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {CT}\r\n{size}\r\n\r\n".encode()
                  + (b"%x\r\n%s\r\n" % (len(head), head) if chunked else head))
        s.settimeout(2)
        for _ in range(megabytes * 16):
            if select.select([s], [], [], 0)[0]:
                break  # answered
            try:
                s.sendall(b"10000\r\n" + piece + b"\r\n" if chunked else piece)
            except OSError:  # the server stopped reading (a timeout) or closed: read its answer
                break
        s.settimeout(timeout)
        data = b""
        try:
            while b"}" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else -1
    return status, data.partition(b"\r\n\r\n")[2], 0


def disconnect(port: int, body: bytes) -> tuple[int | None, bytes, int]:
    """Half of a good upload, then the connection closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {CT}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
    return None, b"", 0


def correct(answer: bytes, reference: dict[str, Any]) -> bool:
    """The answer's top classes and probabilities are the reference's (to 1e-4)."""
    try:
        top = json.loads(answer)["results"][0]["top"]
    except (ValueError, KeyError, IndexError):
        return False
    return [t["class"] for t in top] == [t["class"] for t in reference["top"]] and all(
        abs(a["prob"] - b["prob"]) <= 1e-4 for a, b in zip(top, reference["top"], strict=True))


def one_request(port: int, kind: str, sent: dict[str, tuple[bytes, str]], args: Any) -> tuple[int | None, bytes, int]:
    base = kind.split("_")[0] if kind.startswith("good") else kind
    if base in ("too_big", "chunked_too_big"):
        return oversized(port, 2 if base == "too_big" else 16, base == "chunked_too_big", args.request_timeout)
    if base == "disconnect":
        return disconnect(port, sent["good"][0])
    return post(port, *sent[base], args.request_timeout)


def run_clients(port: int, sent: dict[str, tuple[bytes, str]], reference: dict[str, Any],
                args: Any) -> tuple[list[dict[str, Any]], float]:
    """C threads take request numbers until N are done; a 503 is retried after Retry-After."""
    lock, results, next_id, kinds = threading.Lock(), [], [0], list(KINDS)
    deadline = time.monotonic() + args.time_limit

    def client() -> None:
        while True:
            with lock:
                if next_id[0] >= args.requests or time.monotonic() > deadline:
                    return
                rid = next_id[0]
                next_id[0] += 1
            kind, statuses, latencies = kinds[rid % len(kinds)], [], []
            while True:
                start = time.perf_counter()
                status, answer, retry = one_request(port, kind, sent, args)
                latencies.append(time.perf_counter() - start)
                statuses.append(status)
                if status != 503 or time.monotonic() > deadline:
                    break
                time.sleep(min(retry or 1, 5))
            expected = KINDS[kind]
            ok = status == expected and (expected != 200 or correct(answer, reference))
            with lock:
                results.append({"id": rid, "kind": kind, "good": kind.startswith("good"), "status": status,
                                "expected": expected, "ok": ok, "statuses": statuses, "seconds": latencies})

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.time_limit + 2 * args.request_timeout)
    return results, time.perf_counter() - start


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {"p50": q[49], "p99": q[98], "max": max(values)}


def soak(args: Any, tmp: Path) -> dict[str, Any]:
    """Start the server, take the reference answer, run the clients; the figures and checks."""
    video = SHARED_AVI if SHARED_AVI.is_file() else tmp / "clip.avi"
    if not SHARED_AVI.is_file():
        make_clip(video, 10.0)
    sent = bodies(video.read_bytes())
    ckpt = make_checkpoint("tiny", tmp)
    port = free_port()
    server = start_server(ckpt, port, args, tmp)
    try:
        status, answer, _ = post(port, *sent["good"], args.request_timeout)
        if status != 200:
            raise RuntimeError(f"the reference request was answered {status}: {answer[:300]!r}")
        reference = json.loads(answer)["results"][0]
        rss_before = rss_mb(server.pid)
        results, wall = run_clients(port, sent, reference, args)
        pool, uploads_left = settle(port, tmp)
        rss_after = rss_mb(server.pid)
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(30)
    return {"video": video.name, "reference_top1": reference["top"][0]["class"], "results": results, "wall": wall,
            "pool": pool, "rss_before_mb": rss_before, "rss_after_mb": rss_after, "uploads_left": uploads_left,
            "alive_at_end": alive}


def settle(port: int, tmp: Path, timeout: float = 10.0) -> tuple[dict[str, Any], list[str]]:
    """The pool's status and the uploads left, once no slot is held and no upload is left (the last
    disconnects are noticed) or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            pool = json.loads(r.read())["pool"]
        left = [p.name for p in tmp.glob("stfn-serve-*/*")]
        if (not pool["held"] and not left) or time.monotonic() > deadline:
            return pool, left
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarise(run: dict[str, Any], args: Any) -> dict[str, Any]:
    """Counts by status and by kind, latency percentiles, memory, and what failed."""
    results = run["results"]
    attempts = [s for r in results for s in r["statuses"]]
    good = [r for r in results if r["good"]]
    growth = run["rss_after_mb"] - run["rss_before_mb"]
    by_kind: dict[str, Counter] = {}
    for r in results:
        status = "hung up" if r["status"] is None else str(r["status"])
        by_kind.setdefault("good" if r["good"] else r["kind"], Counter())[status] += 1
    failures = {"requests_not_done": args.requests - len(results),
                "good_not_answered_correctly": sum(not r["ok"] for r in good),
                "bad_not_answered_as_expected": sum(not r["ok"] for r in results if not r["good"]),
                "server_errors_other_than_503": sorted({s for s in attempts if s is not None and s >= 500 and s != 503}),
                "uploads_left": run["uploads_left"], "slots_held": run["pool"]["held"],
                "rss_growth_over_bound": growth > args.rss_growth_mb, "server_died": not run["alive_at_end"]}
    return {"requests": len(results), "good": len(good), "bad": len(results) - len(good), "attempts": len(attempts),
            "statuses": dict(sorted(Counter("hung up" if s is None else str(s) for s in attempts).items())),
            "by_kind": {k: dict(v) for k, v in by_kind.items()}, "wall_seconds": run["wall"],
            "latency_seconds": percentiles([x for r in results for x in r["seconds"]]),
            "good_latency_seconds": percentiles([r["seconds"][-1] for r in good if r["ok"]]),
            "rss_before_mb": run["rss_before_mb"], "rss_after_mb": run["rss_after_mb"], "rss_growth_mb": growth,
            "rss_growth_bound_mb": args.rss_growth_mb, "pool_after": run["pool"], "failures": failures,
            "failed": any(bool(v) for v in failures.values())}


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests to send (about half of them good)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="stfn serve --workers")
    parser.add_argument("--queue", type=int, default=2, help="stfn serve --queue (2 + 2 slots for 8 clients: some 503s)")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds after which no request is sent")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds per HTTP request")
    parser.add_argument("--rss-growth-mb", type=float, default=100.0,
                        help="fail when the server's VmRSS grows by more than this over the soak")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.clients, args.time_limit = 2 * len(KINDS) - 6, 4, 120.0
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="stfn-bench-soak-") as tmp_name:
        run = soak(args, Path(tmp_name))
    s = summarise(run, args)
    print(f"stfn serve soak: {s['requests']} requests ({s['good']} good, {s['bad']} hostile) of {run['video']} "
          f"from {args.clients} clients, tiny preset, --workers {args.workers} --queue {args.queue} "
          f"--max-upload-mb 1, {args.threads or 1} thread(s) per worker")
    lat, glat = s["latency_seconds"], s["good_latency_seconds"]
    print(md_table(["requests", "attempts", "statuses (all attempts)", "good correct", "wall s", "p50 s", "p99 s",
                    "good p50 s", "good p99 s", "RSS before MB", "RSS after MB"],
                   [[s["requests"], s["attempts"], ", ".join(f"{k}: {v}" for k, v in s["statuses"].items()),
                     f"{s['good'] - s['failures']['good_not_answered_correctly']}/{s['good']}", s["wall_seconds"],
                     lat.get("p50", 0.0), lat.get("p99", 0.0), glat.get("p50", 0.0), glat.get("p99", 0.0),
                     s["rss_before_mb"], s["rss_after_mb"]]]))
    print("by kind (final status): " + "; ".join(f"{k} {v}" for k, v in s["by_kind"].items()))
    print(machine_line(machine_info()) + f"; load average before {'/'.join(f'{v:.2f}' for v in load_before)}")
    path = write_results("serve_soak", {"settings": vars(args) | {"out": str(args.out)}, "summary": s,
                                        "requests_detail": run["results"]}, args.out, load_before)
    print(f"wrote {path}", file=sys.stderr)
    if s["failed"]:
        print(f"serve_soak: FAILED: {json.dumps({k: v for k, v in s['failures'].items() if v})}", file=sys.stderr)
    return 1 if s["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
