"""``stfn serve`` on the command line: bad arguments are one sentence before anything starts."""

from __future__ import annotations

import pytest
from serve_helpers import free_port

from stfn.cli import build_parser, main


@pytest.mark.parametrize(("argv", "words"), [
    ([], "give at least one CHECKPOINT"),
    (["missing.pt"], "checkpoint 'missing.pt' does not exist"),
    (["x.pt", "--port", "0"], "--port must be between 1 and 65535"),
    (["x.pt", "--workers", "0"], "--workers must be at least 1"),
    (["x.pt", "--queue", "-1"], "--queue must be 0 or more"),
    (["x.pt", "--threads", "-2"], "--threads must be 0"),
    (["--prepared", "no/such/dir"], "prepared folder 'no/such/dir' does not exist"),
])
def test_bad_arguments_are_one_sentence(argv, words, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stfn serve: error: ") and words in err and "Traceback" not in err


def test_help_tells_the_defaults() -> None:
    args = build_parser().parse_args(["serve", "m.pt"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_upload_mb == 200  # loopback by default
    sub = build_parser()._subparsers._group_actions[0].choices["serve"]
    text = sub.format_help()
    for words in ("--host", "127.0.0.1", "--max-upload-mb", "--prepared", "Retry-After", "--workers"):
        assert words in text


def test_bad_max_upload_is_refused(checkpoints, capsys) -> None:
    assert main(["serve", str(checkpoints["rgb"]), "--max-upload-mb", "0", "--device", "cpu"]) == 2
    assert "--max-upload-mb must be positive" in capsys.readouterr().err


def test_a_port_in_use_is_one_sentence(checkpoints, capsys) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(checkpoints["rgb"]), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port} (--host/--port)" in err and "in use" in err


@pytest.mark.parametrize(("make", "words"), [
    (lambda good: good.read_bytes()[:3000], "is truncated or damaged"),
    (lambda good: b"", "is empty (0 bytes)"),
    (lambda good: b"not a checkpoint, just text\n" * 10, "is not a PyTorch checkpoint"),
    (lambda good: bytes(range(256)) * 40, "bad.pt"),
], ids=["truncated", "empty", "text", "random"])
def test_a_corrupt_checkpoint_at_start_up_is_one_sentence_and_exit_2(checkpoints, tmp_path, capsys, make,
                                                                      words) -> None:
    """Issue 28: a damaged checkpoint stops ``stfn serve`` before it listens, with one sentence."""
    bad = tmp_path / "bad.pt"
    bad.write_bytes(make(checkpoints["rgb"]))
    assert main(["serve", str(bad), "--port", str(free_port()), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("stfn serve: error: ") and words in err and "bad.pt" in err and "Traceback" not in err
