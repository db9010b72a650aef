"""The ``stfn serve`` application: the HTTP API and the web page, on :class:`stfn.predict.Predictor`.

Routes (every error is JSON ``{"detail": "one sentence"}`` with its status):

- ``GET /healthz``: ``{"status": "ok", "models": [...], "pool": {...}, "max_upload_mb"}``;
- ``GET /v1/models``: the loaded checkpoints (name, file, model card, settings);
- ``POST /v1/predict``: multipart ``file`` (one video) and optional ``model``, ``top_k``, ``crops``;
  returns the document ``stfn predict --json`` prints for that one video;
- ``POST /v1/explain``: the same plus ``window``, ``stride``; adds ``explain`` (sampled positions,
  thumbnails and flow as JPEG data URLs, class probabilities over sliding windows) and ``card``;
- ``GET /``: the page; ``GET /prepared`` and ``/v1/prepared...``: the prepared-set browser
  (``--prepared DIR``); ``/docs``: FastAPI's OpenAPI page.

Statuses: 404 unknown model, key or file; 408 an upload that stalls or crawls; 413 upload over the limit (checked while it streams); 422 a
request or a file that cannot be used (not a video, corrupt, empty, a bad field); 503 every worker and
queue place taken, with ``Retry-After``.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from stfn import __version__
from stfn.errors import StfnError
from stfn.serve.models import CROPS, ModelEntry
from stfn.serve.pool import QueueFull, WorkerPool
from stfn.serve.prepared import NotFound, PreparedSet, encode_jpeg
from stfn.serve.uploads import Upload, UploadError, receive_upload, upload_folder

__all__ = ["ServerState", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
PREDICT_FIELDS = ("model", "top_k", "crops")
EXPLAIN_FIELDS = (*PREDICT_FIELDS, "window", "stride")


@dataclass
class ServerState:
    """What the routes share: the models (first = default), the pool, the upload folder, the limit."""

    models: dict[str, ModelEntry]
    pool: WorkerPool
    upload_root: Path
    max_bytes: int
    prepared: PreparedSet | None = None

    def entry(self, name: str | None) -> ModelEntry:
        if not self.models:
            raise HTTPException(404, "this server holds no model (it was started with --prepared only)")
        if not name:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise HTTPException(404, f"unknown model '{name}' (loaded: {', '.join(self.models)})")
        return self.models[name]


def _int_field(fields: dict[str, str], name: str, low: int = 1, choices: tuple[int, ...] = ()) -> int | None:
    """Form field ``name`` as an int (``None`` when absent or empty); 422 for anything else."""
    raw = fields.get(name, "")
    if raw == "":
        return None
    if not raw.lstrip("-").isdigit():
        raise HTTPException(422, f"form field '{name}' must be a whole number, got '{raw[:40]}'")
    value = int(raw)
    if choices and value not in choices:
        raise HTTPException(422, f"form field '{name}' must be one of {', '.join(map(str, choices))}, got {value}")
    if value < low:
        raise HTTPException(422, f"form field '{name}' must be at least {low}, got {value}")
    return value


def _hide_paths(message: str, upload: Upload) -> str:
    """``message`` with the server's temporary path of the upload replaced by the client's file name."""
    for p in (upload.path.resolve(), upload.path, upload.path.parent.resolve(), upload.path.parent):
        message = message.replace(str(p), upload.filename)
    return message


def _moving(result: dict[str, Any], upload: Upload) -> dict[str, Any]:
    """``result``, unless the upload decoded to a single frame: a still image (PNG, JPEG, ...) that the
    video decoder reads as a one-frame video, refused with one sentence (422)."""
    if int(result.get("frames") or 0) < 2:
        raise StfnError(f"'{upload.filename}' holds a single frame (a still image?), not a video")
    return result


def _data_url(rgb: Any) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(rgb, 85)).decode("ascii")


def _explain_doc(result: dict[str, Any], entry: ModelEntry) -> dict[str, Any]:
    """Split :meth:`Predictor.explain`'s result into the predict result and the page's ``explain``."""
    extra = {k: result.pop(k) for k in ("positions", "thumbnails", "flow_images", "flow_max", "windows")}
    windows, fps = extra["windows"], result.get("fps") or 0.0
    windows["window_seconds"] = windows["window"] / fps if fps else None
    windows["stride_seconds"] = windows["stride"] / fps if fps else None
    return {"positions": extra["positions"], "thumbnails": [_data_url(t) for t in extra["thumbnails"]],
            "flow_images": [_data_url(f) for f in extra["flow_images"]] if extra["flow_images"] else None,
            "flow_max": extra["flow_max"], "windows": windows, "classes": entry.predictor.classes}


async def _predict(request: Request, explain: bool) -> dict[str, Any]:
    state: ServerState = request.app.state.stfn
    try:
        async with state.pool.slot():
            with upload_folder(state.upload_root) as folder:
                upload = await receive_upload(request, folder, state.max_bytes,
                                              fields=EXPLAIN_FIELDS if explain else PREDICT_FIELDS)
                entry = state.entry(upload.fields.get("model"))
                top_k = _int_field(upload.fields, "top_k") or 5
                predictor = entry.with_crops(_int_field(upload.fields, "crops", choices=CROPS))
                window, stride = _int_field(upload.fields, "window"), _int_field(upload.fields, "stride")

                def job() -> tuple[dict[str, Any], dict[str, Any] | None]:  # on a worker, images encoded too
                    if not explain:
                        return _moving(predictor.predict(upload.path, top_k), upload), None
                    result = _moving(predictor.explain(upload.path, top_k, window=window, stride=stride), upload)
                    return result, _explain_doc(result, entry)

                try:
                    result, extra = await state.pool.run(job)
                except StfnError as e:
                    raise HTTPException(422, _hide_paths(str(e), upload)) from None
                except Exception as e:  # a decoder or flow library failing on this file, as predict_many reports it
                    raise HTTPException(422, _hide_paths(f"'{upload.filename}' could not be processed "
                                                         f"({type(e).__name__}: {e})", upload)) from None
    except QueueFull as e:
        raise HTTPException(503, str(e), headers={"Retry-After": str(e.retry_after)}) from None
    except UploadError as e:
        raise HTTPException(e.status, e.message) from None
    result["video"] = upload.filename
    doc: dict[str, Any] = {"checkpoint": entry.name, "settings": predictor.settings(), "failed": 0}
    if extra is not None:
        doc["explain"] = extra
        doc["card"] = entry.predictor.card
    doc["results"] = [result]
    return doc


def _validation_sentence(exc: RequestValidationError) -> str:
    """FastAPI's first validation error as one sentence: ``query parameter 'index' must be a whole
    number, got 'abc'``."""
    errors = exc.errors()
    if not errors:
        return "the request's parameters are not valid"
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ())]
    where = f"{loc[0]} parameter '{'.'.join(loc[1:])}'" if len(loc) > 1 else "parameter"
    if first.get("type") == "missing":
        return f"{where} is missing"
    if first.get("type", "").startswith("int_"):
        return f"{where} must be a whole number, got '{str(first.get('input'))[:40]}'"
    return f"{where} is not valid: {first.get('msg', 'invalid value')}"


def _prepared(request: Request) -> PreparedSet:
    prepared = request.app.state.stfn.prepared
    if prepared is None:
        raise HTTPException(404, "this server browses no prepared data set (start it with --prepared DIR)")
    return prepared


def _add_api_routes(app: FastAPI) -> None:
    @app.get("/healthz")
    def healthz(request: Request) -> dict[str, Any]:
        state: ServerState = request.app.state.stfn
        return {"status": "ok", "version": __version__, "models": list(state.models),
                "pool": state.pool.status(), "max_upload_mb": state.max_bytes / 2**20,
                "prepared": state.prepared is not None}

    @app.get("/v1/models")
    def models(request: Request) -> dict[str, Any]:
        return {"models": [e.describe() for e in request.app.state.stfn.models.values()]}

    @app.post("/v1/predict", summary="top-k classes of one uploaded video (as `stfn predict --json`)")
    async def predict(request: Request) -> Any:
        try:
            return await _predict(request, explain=False)
        except ClientDisconnect:  # the upload was abandoned; its folder is already gone
            return Response(status_code=400)

    @app.post("/v1/explain", summary="predict, plus the sampled frames, their flow and scores over time")
    async def explain(request: Request) -> Any:
        try:
            return await _predict(request, explain=True)
        except ClientDisconnect:
            return Response(status_code=400)



def _add_page_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index(request: Request) -> Any:
        if not request.app.state.stfn.models:
            return RedirectResponse("/prepared")
        return FileResponse(STATIC / "index.html")

    @app.get("/prepared", include_in_schema=False)
    def prepared_page(request: Request) -> Any:
        _prepared(request)
        return FileResponse(STATIC / "prepared.html")

    @app.get("/v1/prepared")
    def prepared_summary(request: Request) -> dict[str, Any]:
        return _prepared(request).summary()

    @app.get("/v1/prepared/video")
    def prepared_video(request: Request, key: str) -> dict[str, Any]:
        return _prepared(request).video(key)

    @app.get("/v1/prepared/frame", response_class=Response)
    def prepared_frame(request: Request, key: str, index: int) -> Response:
        return Response(_prepared(request).frame_jpeg(key, index), media_type="image/jpeg")

    @app.get("/v1/prepared/flow", response_class=Response)
    def prepared_flow(request: Request, key: str, index: int) -> Response:
        return Response(_prepared(request).flow_jpeg(key, index), media_type="image/jpeg")

    @app.exception_handler(RequestValidationError)
    def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A query parameter missing or of the wrong type: 422 with one sentence naming it, not
        FastAPI's list of dictionaries."""
        return JSONResponse({"detail": _validation_sentence(exc)}, status_code=422)

    @app.exception_handler(NotFound)
    def not_found(request: Request, exc: NotFound) -> JSONResponse:
        """A key or index outside the prepared set's manifest: 404, the sentence as ``detail``."""
        return JSONResponse({"detail": str(exc)}, status_code=404)


def create_app(models: dict[str, ModelEntry], *, workers: int = 1, queue: int = 8, threads: int | None = None,
               max_upload_mb: float = 200.0, prepared: str | Path | None = None) -> FastAPI:
    """The application for ``models`` (:func:`stfn.serve.models.load_models`; the first is the
    default) and/or a ``prepared`` folder to browse. ``workers`` prediction threads with ``threads``
    CPU threads each behind ``queue`` places (:class:`~stfn.serve.pool.WorkerPool`); uploads up to
    ``max_upload_mb`` go to a private temporary folder, removed when the app shuts down."""
    if max_upload_mb <= 0:
        raise StfnError(f"--max-upload-mb must be positive, got {max_upload_mb:g}")
    browse = PreparedSet(prepared) if prepared is not None else None
    if not models and browse is None:
        raise StfnError("give at least one checkpoint to serve, or --prepared DIR to browse")
    pool = WorkerPool(workers, queue, threads)
    upload_root = Path(tempfile.mkdtemp(prefix="stfn-serve-"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            pool.shutdown()
            shutil.rmtree(upload_root, ignore_errors=True)

    app = FastAPI(title="stfn serve", version=__version__, lifespan=lifespan,
                  description="Two-stream video action recognition: upload a video, get its top-k classes.")
    app.state.stfn = ServerState(models, pool, upload_root, int(max_upload_mb * 2**20), browse)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_api_routes(app)
    _add_page_routes(app)
    return app
