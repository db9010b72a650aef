"""The ``stfn`` command line. Thin: each subcommand lives in ``stfn.commands.<name>`` with
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import shlex
import sys
from pathlib import Path

from stfn.errors import StfnError
from stfn.version import __version__

# subcommand -> module; a reader finds the code behind any subcommand with one search.
COMMANDS: dict[str, str] = {
    "demo": "stfn.commands.demo",
    "compare": "stfn.commands.compare",
    "synth": "stfn.commands.synth",
    "prepare": "stfn.commands.prepare",
    "repack": "stfn.commands.repack",
    "data-info": "stfn.commands.data_info",
    "model-info": "stfn.commands.model_info",
    "train": "stfn.commands.train",
    "eval": "stfn.commands.evaluate",
    "extract-features": "stfn.commands.extract_features",
    "predict": "stfn.commands.predict",
    "export": "stfn.commands.export",
    "import-mmaction": "stfn.commands.import_mmaction",
    "ablate": "stfn.commands.ablate",
    "serve": "stfn.commands.serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stfn",
        description="Two-stream video action recognition with the Spatio-Temporal Fusion Network.",
    )
    parser.add_argument("--version", action="version", version=f"stfn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _resume=getattr(module, "RESUME", None))
    return parser


def interrupted_message(command: str, resume: str | None, argv: list[str]) -> str:
    """What to say after Ctrl-C: the command that resumes (``RESUME`` of the command's module: ``""``
    for the same command, or the flag to add), or that nothing resumes."""
    if resume is None:
        return f"stfn {command}: interrupted."
    again = ["stfn", *argv] + ([resume] if resume and resume not in argv else [])
    return f"stfn {command}: interrupted; to resume, run: {shlex.join(again)}"


def one_line(text: str) -> str:
    """``text`` as one printable line: newlines become spaces, other control characters (a terminal
    escape code in a file name or a library's message) their ``\\x..`` escape."""
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def os_error_message(e: OSError) -> str:
    """One sentence for an OS error that reached the command line, naming its path; a folder that
    could not be made because a file holds its name (or a parent's) says which file."""
    if not e.filename:
        return str(e.strerror or e)
    name = Path(str(e.filename))
    if e.errno in (errno.EEXIST, errno.ENOTDIR):
        p = name
        while p != p.parent and not p.exists():
            p = p.parent
        if p.is_file():
            return f"'{p}' is a file, not a folder" + (f" (needed for '{name}')" if p != name else "")
    return f"{e.strerror or e}: '{name}'"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except StfnError as e:
        print(f"stfn {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user gave that cannot be read or written (exists as a file, read-only, full)
        print(f"stfn {args.command}: error: {one_line(os_error_message(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(one_line(interrupted_message(args.command, args._resume, argv)), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
