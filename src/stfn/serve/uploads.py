"""Streaming multipart upload of one video into a private temporary folder, with the size limit
checked while the bytes arrive.

The request body is parsed as it streams (``python_multipart``'s push parser); the file part goes
straight to ``<folder>/video<ext>`` (the extension kept only when it is a known video extension), so
no request names a path on the server: the client's file name is kept only to name the video in
answers. The upload stops with 413 as soon as the file passes ``max_bytes`` (or at once when
``Content-Length`` already says so). The caller owns ``folder`` and deletes it (:func:`upload_folder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from stfn.data.prepare.manifest import VIDEO_EXTENSIONS

__all__ = ["Upload", "UploadError", "receive_upload", "upload_folder"]

MAX_FIELD_BYTES = 1024  # a text field (model, top_k, ...) longer than this is refused
IDLE_TIMEOUT_S = 60.0  # an upload that sends nothing for this long is refused (408)
MIN_RATE = 16 * 1024  # bytes/s an upload must average once RATE_GRACE_S have passed (else 408)
RATE_GRACE_S = 10.0
_SLACK = 64 * 1024  # multipart headers and boundaries on top of the file's bytes


class UploadError(Exception):
    """An upload the server refuses: ``status`` (413, 422) and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Upload:
    """A received upload: ``path`` of the video in the request's folder, the client's ``filename``
    (a bare name, for answers only), its ``size`` in bytes and the text ``fields``."""

    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def upload_folder(root: Path) -> Iterator[Path]:
    """A fresh folder under ``root`` for one request, deleted with everything in it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def client_filename(raw: str) -> str:
    """The last component of a client's file name, printable, at most 200 characters."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())[:200]
    return name or "upload"


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**16 else f"{n} bytes"


class _Parts:
    """Callbacks of the multipart parser: collects text fields, streams the one file part to disk."""

    def __init__(self, folder: Path, max_bytes: int, file_field: str, allowed: set[str]) -> None:
        self.folder, self.max_bytes, self.file_field, self.allowed = folder, max_bytes, file_field, allowed
        self.fields: dict[str, str] = {}
        self.header_name, self.header_value = b"", b""
        self.headers: dict[bytes, bytes] = {}
        self.name, self.filename = "", None  # the current part's field name; the file part's file name
        self.value = bytearray()
        self.out: IO[bytes] | None = None
        self.path: Path | None = None
        self.size, self.files, self.complete = 0, 0, False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.part_begin, "on_header_field": self.header_field,
            "on_header_value": self.header_value_data, "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
            "on_part_end": self.part_end, "on_end": self.end,
        }

    def part_begin(self) -> None:
        self.headers, self.value = {}, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_data(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name, self.header_value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if self.name not in self.allowed and self.name != self.file_field:
            expected = ", ".join([self.file_field, *sorted(self.allowed)])
            raise UploadError(422, f"unknown form field '{self.name}' (expected: {expected})")
        if self.name == self.file_field:
            self.files += 1
            if self.files > 1:
                raise UploadError(422, f"send one video per request (one '{self.file_field}' field)")
            self.filename = client_filename(filename.decode("utf-8", "replace") if filename else "upload")
            suffix = Path(self.filename).suffix.lower()
            self.path = self.folder / ("video" + (suffix if suffix in VIDEO_EXTENSIONS else ""))
            self.out = open(self.path, "wb")  # noqa: SIM115 (closed in part_end / close)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.out is not None:
            self.size += end - start
            if self.size > self.max_bytes:
                raise UploadError(413, f"the upload is larger than the server's limit of {_megabytes(self.max_bytes)} "
                                       "(stfn serve --max-upload-mb)")
            self.out.write(data[start:end])
        else:
            self.value += data[start:end]
            if len(self.value) > MAX_FIELD_BYTES:
                raise UploadError(422, f"form field '{self.name}' is longer than {MAX_FIELD_BYTES} bytes")

    def part_end(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        else:
            self.fields[self.name] = self.value.decode("utf-8", "replace").strip()

    def end(self) -> None:
        self.complete = True

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


async def receive_upload(request: Request, folder: Path, max_bytes: int, *, file_field: str = "file",
                         fields: tuple[str, ...] = (), idle_timeout: float = IDLE_TIMEOUT_S,
                         min_rate: float = MIN_RATE, rate_grace: float = RATE_GRACE_S) -> Upload:
    """Read a ``multipart/form-data`` request with one file (``file_field``) and the text ``fields``
    into ``folder``. Raises :class:`UploadError` (408: no bytes for ``idle_timeout`` seconds, or fewer
    than ``min_rate`` bytes/s on average after ``rate_grace`` seconds, so a stalled or dripping client
    does not hold its pool slot for ever; 413: over ``max_bytes``; 422: not multipart,
    no file, an empty file, an unknown field, a body that ends early) and lets Starlette's
    ``ClientDisconnect`` through (the caller's ``upload_folder`` removes what arrived)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadError(422, f"send the video as multipart/form-data with a '{file_field}' field "
                               f"(e.g. curl -F {file_field}=@video.mp4 ...)")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes + _SLACK:
        raise UploadError(413, f"the upload ({_megabytes(int(length))}) is larger than the server's limit of "
                               f"{_megabytes(max_bytes)} (stfn serve --max-upload-mb)")
    parts = _Parts(folder, max_bytes, file_field, set(fields))
    parser = MultipartParser(options[b"boundary"], parts.callbacks())
    try:
        await _feed(request, parser, parts, max_bytes + _SLACK, (idle_timeout, min_rate, rate_grace))
    except MultipartParseError as e:
        if "header" in str(e).lower():  # python-multipart's bounds: 8 headers of at most 4 KB per part
            raise UploadError(422, "a part of the form has too many or too long headers (at most 8 of 4 KB each; "
                                   "a file name that long?)") from None
        raise UploadError(422, "the request body is not valid multipart/form-data") from None
    finally:
        parts.close()
    if parts.path is None:
        raise UploadError(422, f"no video in the request: send it in the form field '{file_field}'")
    if not parts.complete:
        raise UploadError(422, "the upload ended before its last part (the body is cut short)")
    if parts.size == 0:
        raise UploadError(422, f"the uploaded file '{parts.filename}' is empty")
    return Upload(parts.path, parts.filename or "upload", parts.size, parts.fields)


async def _feed(request: Request, parser: MultipartParser, parts: _Parts, max_body: int,
                timing: tuple[float, float, float]) -> None:
    """Push the body's chunks into ``parser`` until the closing boundary: 413 once the whole body
    (text fields, part headers and what follows the last part included) passes ``max_body`` bytes, so
    no body is read without end; 408 after ``idle_timeout`` seconds without a chunk, or when the body
    averages under ``min_rate`` bytes/s after ``rate_grace`` seconds (``timing`` holds those three)."""
    idle_timeout, min_rate, rate_grace = timing
    chunks, total, start = request.stream().__aiter__(), 0, time.monotonic()
    while not parts.complete:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), idle_timeout)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise UploadError(408, f"the upload stalled: no data for {idle_timeout:g} s") from None
        if chunk:
            parser.write(chunk)  # the file part's own limit (413) comes first: it names the file
        total += len(chunk)
        if total > max_body:
            raise UploadError(413, f"the request body is larger than the server's limit of {_megabytes(max_body)} "
                                   "(stfn serve --max-upload-mb, plus 64 KB for the form)")
        elapsed = time.monotonic() - start
        if elapsed > rate_grace and total < min_rate * elapsed:
            raise UploadError(408, f"the upload is too slow: {_megabytes(total)} in {elapsed:.1f} s (at least "
                                   f"{min_rate / 1024:.0f} KB/s on average after the first {rate_grace:g} s)")
    if not parts.complete:
        parser.finalize()

