"""Crash-safe writes: write to a temporary file in the same folder, then ``os.replace``.

The temporary file is ``.<name>.<8 hex>.tmp`` next to the target, created with mode ``0o666`` less
the umask (as ``open`` would: ``0644`` under umask 022, so a shared group can read the outputs); a
kill during a write leaves it behind, and :func:`remove_stale_temps` removes those of given names.
An OS error while writing (no space left, not writable) is re-raised as an ``OSError`` whose
``filename`` is the target path (or the folder above it that could not be created), so the message
names the file the user asked for, never the temporary one.
:func:`check_writable` tells, before a long computation, whether its output can be written at all.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from stfn.errors import StfnError

__all__ = [
    "atomic_copy",
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_with",
    "check_writable",
    "remove_stale_temps",
]


def _temp_file(path: Path) -> tuple[int, str]:
    """``(fd, name)`` of a new, empty ``.<name>.<hex>.tmp`` next to ``path`` (mode 0o666 less the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def _atomic(path: str | os.PathLike, write: Callable[[int, str], None]) -> None:
    """``write(fd, tmp)`` into a temporary file, then ``os.replace`` it onto ``path``; errors name ``path``."""
    path = Path(path)
    tmp = ""
    try:
        fd, tmp = _temp_file(path)
        write(fd, tmp)
        os.replace(tmp, path)
    except OSError as e:  # name the file asked for, not the temporary one (or none: a failed write)
        _remove(tmp)
        if e.filename and e.filename != tmp:
            raise  # e.g. a parent folder that cannot be created: the message names it
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: str) -> None:
    if tmp and os.path.exists(tmp):
        os.unlink(tmp)


def atomic_write_with(path: str | os.PathLike, write: Callable[[int, str], None]) -> None:
    """``write(fd, tmp)`` (which owns and closes ``fd``) into a temporary file beside ``path``, then
    renamed onto it: readers see the old file or the whole new one; errors name ``path``."""
    _atomic(path, write)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""

    def write(fd: int, tmp: str) -> None:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    _atomic(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and ``os.replace``. ``torch.save`` reports a failed
    write (a full disk) as a ``RuntimeError`` of its zip writer: that becomes an ``OSError`` naming
    ``path``."""
    import torch  # lazy: the lowest layer imports no heavy library at import time

    def write(fd: int, tmp: str) -> None:
        os.close(fd)
        try:
            torch.save(obj, tmp)
        except RuntimeError:
            free = shutil.disk_usage(Path(tmp).parent).free
            if free < 64 << 20:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
            raise OSError(errno.EIO, "torch.save could not write it") from None

    _atomic(path, write)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """For a writer that takes a file name (an exporter): the name of an empty temporary file next to
    ``path`` (mode 0o666 less the umask), moved onto ``path`` when the block ends without an error and
    removed otherwise; OS errors name ``path``."""
    path = Path(path)
    fd, tmp = _temp_file(path)
    try:
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if e.filename and e.filename != tmp:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_copy(src: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy the file ``src`` to ``path`` through a temporary file and ``os.replace``."""

    def write(fd: int, tmp: str) -> None:
        os.close(fd)
        shutil.copyfile(src, tmp)

    _atomic(path, write)


def remove_stale_temps(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Remove the temporary files a killed write of ``folder/<name>`` left (``.<name>.<hex>.tmp``, and
    ``tempfile``'s ``.<name>.<8 chars>.tmp`` of older versions) for each of ``names``; returns them.
    Only files of those names are touched."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for name in names:
        for p in folder.glob(f".{name}.*.tmp"):
            middle = p.name[len(name) + 2 : -4]
            if len(middle) == 8 and middle.replace("_", "").isalnum() and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def check_writable(path: str | os.PathLike, what: str, folder: bool = False) -> None:
    """Raise one :class:`StfnError` sentence unless ``path`` (a file; a folder with ``folder``) could be
    written now: it is not of the other kind, the nearest existing folder above it is a folder, and a
    file can be created there. ``what`` names the option (``--json``, ``--out``). Creates nothing."""
    path = Path(path)
    if path.is_dir() and not folder:
        raise StfnError(f"{what} '{path}' is a folder; give a file name")
    if path.exists() and not path.is_dir() and folder:
        raise StfnError(f"{what} '{path}' is a file, not a folder")
    where = path if folder else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise StfnError(f"{what} '{path}' cannot be written: '{where}' is a file, not a folder")
    try:
        fd, tmp = _temp_file(where / ".stfn-write-check")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise StfnError(f"{what} '{path}' cannot be written: {e.strerror or e} ('{where}')") from None
