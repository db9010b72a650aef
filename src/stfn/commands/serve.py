"""``stfn serve [CHECKPOINT ...] [--prepared DIR] [--host 127.0.0.1] [--port 8000] [--workers N] [--queue Q]
[--max-upload-mb 200] [--backend auto]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = ("Serve checkpoints over HTTP (API + web page: top-k, sampled frames with their flow, scores over "
        "time) and/or browse a prepared data set (--prepared). Needs the serve extra.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                        help="checkpoints written by `stfn train`; the first is the default model")
    parser.add_argument("--prepared", default=None, metavar="DIR",
                        help="also browse this folder written by `stfn prepare` (frames, flow, manifest) at /prepared")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="predictions run at the same time (default 1)")
    parser.add_argument("--queue", type=int, default=8,
                        help="requests that may wait for a worker; beyond them the answer is 503 with Retry-After (default 8)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per worker for torch and OpenCV (default 0: the cores divided by --workers)")
    parser.add_argument("--max-upload-mb", type=float, default=200.0,
                        help="largest upload accepted, checked while it arrives (default 200)")
    parser.add_argument("--frames", type=int, default=None, help="T positions per video (default: data.frames)")
    parser.add_argument("--crops", type=int, choices=[1, 3, 10], default=None,
                        help="default test views (default: data.test_crops); a request may ask for others")
    parser.add_argument("--flow", default=None, metavar="ALGO", help="flow algorithm (default: as in training)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--amp", default="auto", choices=["auto", "none", "bf16", "fp16"],
                        help="autocast: auto = bf16 where the hardware does it natively, else fp32")
    parser.add_argument("--backend", default="auto", choices=["auto", "eager", "compile", "onnx", "openvino"],
                        help="how the networks run (default auto: openvino on a CPU with native bf16 where "
                             "stfn[openvino] is installed, the fastest measured there, 1.1-1.4x inductor freezing; "
                             "else compile, with inductor freezing, for a backbone of at least 0.23x resnet18's work "
                             "per frame on the CPU (its 20-60 s compile is done at start-up and pays over a "
                             "server's life); eager for small networks such as cnn_small, and on CUDA until "
                             "measured; never onnx, fp32 ONNX Runtime being 0.62x of eager bf16 on a bf16 CPU)")


def _check_address(host: str, port: int) -> None:
    """One sentence, before any model loads, when ``host:port`` cannot be listened on (in use, no such address)."""
    import socket

    from stfn.errors import StfnError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(infos[0][4])
    except OSError as e:
        raise StfnError(f"cannot listen on {host}:{port} (--host/--port): {e.strerror or e}") from None


def run(args: argparse.Namespace) -> int:
    from stfn.errors import StfnError

    if not args.checkpoints and not args.prepared:
        raise StfnError("give at least one CHECKPOINT to serve, or --prepared DIR to browse")
    if not 0 < args.port < 65536:
        raise StfnError(f"--port must be between 1 and 65535, got {args.port}")
    if args.workers < 1:
        raise StfnError(f"--workers must be at least 1, got {args.workers}")
    if args.queue < 0:
        raise StfnError(f"--queue must be 0 or more, got {args.queue}")
    if args.threads < 0:
        raise StfnError(f"--threads must be 0 (default) or more, got {args.threads}")
    if args.max_upload_mb <= 0:
        raise StfnError(f"--max-upload-mb must be positive, got {args.max_upload_mb:g}")
    from stfn.engine.hub import is_repo_id  # torch-free

    for path in args.checkpoints:  # before the imports: a typo is one sentence even without the extra
        if not Path(path).exists() and not is_repo_id(path):
            raise StfnError(f"checkpoint '{path}' does not exist")
    _check_address(args.host, args.port)
    try:
        import uvicorn

        from stfn.serve.app import create_app
        from stfn.serve.models import load_models
        from stfn.serve.pool import threads_per_worker
    except ImportError as e:  # the optional extra is missing
        raise StfnError(f"stfn serve needs the serve extra ({e.name} is missing): pip install \"stfn[serve]\"") from None
    import cv2
    import torch

    from stfn.commands import flag_names
    from stfn.predict import PREDICT_FLAGS, check_options

    with flag_names(**PREDICT_FLAGS):  # before any checkpoint loads
        check_options(args.device, args.amp, args.backend)
    threads = args.threads or threads_per_worker(args.workers)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    if args.checkpoints:
        print(f"stfn serve: loading {len(args.checkpoints)} model(s), --backend {args.backend} (compiled and converted ones are "
              "warmed up before the server answers)", file=sys.stderr, flush=True)
    models = load_models(args.checkpoints, backend=args.backend, flow=args.flow, threads=threads,
                         frames=args.frames, crops=args.crops, device=args.device, amp=args.amp,
                         parallel=args.workers)
    for name, entry in models.items():
        warm = f", warmed up in {entry.warm_up_s:.1f} s" if entry.warm_up_s else ""
        print(f"stfn serve: model {name}: backend {entry.predictor.backend}{warm}", file=sys.stderr, flush=True)
    app = create_app(models, workers=args.workers, queue=args.queue, threads=threads,
                     max_upload_mb=args.max_upload_mb, prepared=args.prepared)
    where = f"http://{args.host}:{args.port}"
    print(f"stfn serve: {len(models)} model(s) ({', '.join(models) or 'none'}), {args.workers} worker(s) x "
          f"{threads} thread(s), queue {args.queue}; page {where}/, API {where}/docs"
          + (f", prepared set {where}/prepared" if args.prepared else ""), file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
