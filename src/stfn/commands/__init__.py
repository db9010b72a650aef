"""One module per ``stfn`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``.

This package module holds what several of them share: argument blocks and their handling, and the
translation of library parameter errors into the flags the user typed. Light imports only, as every
command module (see :mod:`stfn.cli`)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from stfn.errors import ParameterError, StfnError


def add_threads_and_progress(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (torch CPU threads, and heads trained at once) and ``--no-progress``, the last
    arguments of ``stfn demo`` and ``stfn compare``; :func:`set_threads` applies ``--threads``."""
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads of the backbones, and how many heads train at once, one thread "
                             "each (default: torch's choice, one per core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (step and epoch lines only)")


def set_threads(args: argparse.Namespace) -> None:
    """``--threads N`` > 0: torch's CPU threads; 0 leaves torch's choice; below 0 is refused."""
    if args.threads < 0:
        raise StfnError(f"--threads must be 0 (torch's choice) or more, got {args.threads}")
    if args.threads > 0:
        import torch  # heavy: only when a command runs (see stfn.cli)

        torch.set_num_threads(args.threads)


@contextlib.contextmanager
def flag_names(**options: str) -> Iterator[None]:
    """A :class:`~stfn.errors.ParameterError` of the block about a parameter in ``options`` re-raised
    naming its flag, e.g. ``with flag_names(workers="--workers"):``: the user typed the flag, not the
    Python parameter."""
    try:
        yield
    except ParameterError as e:
        if not set(e.parameters) & set(options):
            raise
        raise e.for_options(options) from None
