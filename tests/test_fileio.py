"""Atomic writes (stfn.fileio): the umask is honoured, errors name the target, stale temporary files
of a killed write are removed by name, and outputs are checked writable before long work."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from stfn import fileio
from stfn.errors import StfnError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_honour_the_umask(tmp_path: Path) -> None:
    """Issue 17 item 10: mkstemp made every output 0600, unreadable to a shared group."""
    old = os.umask(0o022)
    try:
        fileio.atomic_write_text(tmp_path / "a.txt", "x")
        fileio.atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "b.pt")
        fileio.atomic_copy(tmp_path / "b.pt", tmp_path / "c.pt")
        os.umask(0o077)
        fileio.atomic_write_text(tmp_path / "d.txt", "x")
    finally:
        os.umask(old)
    assert [_mode(tmp_path / n) for n in ("a.txt", "b.pt", "c.pt", "d.txt")] == [0o644, 0o644, 0o644, 0o600]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.pt", "c.pt", "d.txt"]


def test_a_full_disk_names_the_target_and_leaves_the_old_file(tmp_path: Path, monkeypatch) -> None:
    """Issue 17 item 5: an ENOSPC from the write (or torch.save's RuntimeError for it) is an OSError
    naming the file asked for, not the temporary one or none; the old file is intact."""
    target = tmp_path / "m.json"
    fileio.atomic_write_json(target, {"old": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError) as caught:
        fileio.atomic_write_json(target, {"new": 2})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    monkeypatch.undo()

    def torch_full(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", torch_full)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(OSError) as caught:
        fileio.atomic_torch_save({}, tmp_path / "last.pt")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "last.pt")
    assert target.read_text().strip() == '{\n  "old": 1\n}'.strip() and sorted(os.listdir(tmp_path)) == ["m.json"]


def test_stale_temporary_files_are_removed_by_name_only(tmp_path: Path) -> None:
    stale = [tmp_path / ".last.pt.ab12cd34.tmp", tmp_path / ".last.pt.k_9xq2mz.tmp", tmp_path / ".best.pt.00000000.tmp"]
    keep = [tmp_path / ".other.pt.ab12cd34.tmp", tmp_path / ".last.pt.too-long-name.tmp", tmp_path / "last.pt"]
    for p in stale + keep:
        p.write_bytes(b"x")
    removed = fileio.remove_stale_temps(tmp_path, ["last.pt", "best.pt"])
    assert sorted(removed) == sorted(stale) and all(p.exists() for p in keep)


def test_check_writable(tmp_path: Path, monkeypatch) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    fileio.check_writable(tmp_path / "new" / "deeper" / "r.json", "--json")
    fileio.check_writable(tmp_path / "new_run", "--out", folder=True)
    cases = [
        ((tmp_path, "--json"), "--json '.*' is a folder; give a file name"),
        ((a_file, "--out", True), "--out '.*a_file' is a file, not a folder"),
        ((a_file / "r.json", "--json"), "cannot be written: '.*a_file' is a file, not a folder"),
    ]
    for args, pattern in cases:
        with pytest.raises(StfnError, match=pattern):
            fileio.check_writable(*args)

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(fileio.os, "open", read_only)
    with pytest.raises(StfnError, match=r"--json '.*r\.json' cannot be written: Read-only file system"):
        fileio.check_writable(tmp_path / "r.json", "--json")
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_atomic_path_for_writers_that_take_a_file_name(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with fileio.atomic_path(tmp_path / "m.onnx") as tmp:
            Path(tmp).write_bytes(b"model")
        with pytest.raises(RuntimeError), fileio.atomic_path(tmp_path / "m.onnx") as tmp:
            Path(tmp).write_bytes(b"half")
            raise RuntimeError("the exporter failed")
    finally:
        os.umask(old)
    assert (tmp_path / "m.onnx").read_bytes() == b"model" and _mode(tmp_path / "m.onnx") == 0o644
    assert os.listdir(tmp_path) == ["m.onnx"]
