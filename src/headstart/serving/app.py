"""The HTTP API: POST /predict, GET /health, GET /metadata (OpenAPI at /docs), with limits on what a request
may carry. Every bad request gets a 4xx and a JSON body `{"error": "..."}` that names the offending item."""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import DataError, InputTooLarge
from ..runtime.audio_codec import max_audio_seconds
from ..runtime.codec_base import DecodeLimits, InputCodec
from ..runtime.records import Predictor, prediction_record
from .batcher import DynamicBatcher, ItemRejected, Overloaded


@dataclass
class Limits:
    """What one request may carry, and how much may wait."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_items: int = 64
    max_queue: int = 256  # items waiting for the model; more: 503 with Retry-After
    retry_after_s: int = 1
    # What the items of a body may decode to (a small body can hold a huge image or hour-long recording): each
    # item is checked from its header before decoding, and the request's decoded items together (413 past any).
    # Recordings longer than HEADSTART_MAX_AUDIO_SECONDS fail in decoding whatever max_audio_seconds says.
    max_pixels: int = DecodeLimits.max_pixels
    max_audio_seconds: float = field(default_factory=max_audio_seconds)
    max_decoded_mb: float = 512.0

    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_pixels, self.max_audio_seconds)


class RequestError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


JSON_TYPES = ("application/json",)
MULTIPART = "multipart/form-data"
ITEMS = "predicted_items"  # request.state: how many items a request carried, for the access log
access_logger = logging.getLogger("headstart.access")

_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
                "inputs": {"oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
                           "description": "texts, or one text (text models)"}}}},
            MULTIPART: {"schema": {"type": "object", "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "image files (image models)"}}}},
            "image/*": {"schema": {"type": "string", "format": "binary", "description": "one image (image models)"}},
            "audio/*": {"schema": {"type": "string", "format": "binary", "description": "one recording (audio models)"}},
        },
    },
}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it exceeds `limit` bytes, whatever Content-Length claims."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is {int(declared):,} bytes; the limit is {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_many(n: int, limits: Limits) -> None:
    if n > limits.max_items:
        raise RequestError(413, f"{n} items in one request; the limit is {limits.max_items} (split the request)")


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 400 saying why not: invalid JSON or UTF-8, nesting too deep for the parser
    (RecursionError), a number too long to convert (Python refuses integers of more than 4,300 digits)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise RequestError(400, "the body is not usable JSON (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, and too many digits are ValueErrors
        reason = "a number has too many digits" if "integer string conversion" in str(e) else _short(str(e))
        raise RequestError(400, f"the body is not usable JSON ({reason})") from None


def dumps(payload: Any) -> bytes:
    """A JSON answer as bytes, as Starlette's JSONResponse writes it (UTF-8, compact, NaN refused)."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


class DecodedSize:
    """The running size of a request's decoded items: 413 once it passes `limits.max_decoded_mb` (each item is
    bounded before decoding, so the request holds at most the limit plus one item)."""

    def __init__(self, limits: Limits):
        self.limit, self.total = int(limits.max_decoded_mb * 1024 * 1024), 0

    def add(self, nbytes: int, name: str) -> None:
        self.total += nbytes
        if self.total > self.limit:
            raise RequestError(413, f"the items up to {name} decode to {self.total / 2**20:,.1f} MB; the limit for "
                                    f"one request is {self.limit / 2**20:,.1f} MB (--max-decoded-mb sets it; "
                                    "split the request)")


def json_items(body: bytes, codec: InputCodec, limits: Limits) -> list:
    payload = parse_json(body)
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise RequestError(422, 'expected a JSON object {"inputs": [...]}')
    inputs = payload["inputs"]
    if isinstance(inputs, str):
        inputs = [inputs]  # one input, as the Hugging Face inference API takes it
    if not isinstance(inputs, list):
        raise RequestError(422, f"'inputs' must be a list or a string, got {type(inputs).__name__}")
    if not inputs:
        raise RequestError(422, "'inputs' is empty")
    _too_many(len(inputs), limits)
    items = []
    decoded = DecodedSize(limits)
    for i, value in enumerate(inputs):
        try:
            items.append(codec.decode_json(value))
        except InputTooLarge as e:
            raise RequestError(413, f"inputs[{i}]: {e}") from None
        except DataError as e:
            raise RequestError(422, f"inputs[{i}]: {e}") from None
        decoded.add(codec.decoded_bytes(items[-1]), f"inputs[{i}]")
    return items


async def upload_items(request: Request, body: bytes, codec: InputCodec, limits: Limits) -> tuple[list, list[str]]:
    request._body = body  # starlette parses the form from the body already read (and limited) above
    try:
        form = await request.form(max_files=limits.max_items + 1, max_fields=limits.max_items + 1)
    except Exception as e:  # malformed multipart (no boundary, truncated ...), or too many parts
        text = str(getattr(e, "detail", e)) or type(e).__name__
        status = 413 if "too many" in text.lower() else 400
        raise RequestError(status, f"the multipart body cannot be read ({text})") from None
    files = form.getlist("files")
    if not files:
        raise RequestError(422, "no files: send images as multipart form fields named 'files'")
    _too_many(len(files), limits)
    items, names = [], []
    decoded = DecodedSize(limits)
    for i, upload in enumerate(files):
        if isinstance(upload, str):
            raise RequestError(422, f"files[{i}] is a text field, not a file")
        name = upload.filename or f"files[{i}]"
        data = await upload.read()
        try:
            items.append(await run_in_threadpool(codec.decode_upload, data, name))
        except InputTooLarge as e:
            raise RequestError(413, f"files[{i}] ({name}): {e}") from None
        except DataError as e:
            raise RequestError(400, f"files[{i}] ({name}): {e}") from None
        names.append(name)
        decoded.add(codec.decoded_bytes(items[-1]), f"files[{i}] ({name})")
    return items, names


async def raw_item(body: bytes, ctype: str, codec: InputCodec, limits: Limits) -> list:
    """A raw `image/*` or `audio/*` body as one item, decoded as an uploaded file is (and bounded alike)."""
    try:
        item = await run_in_threadpool(codec.decode_upload, body, f"the {ctype} body")
    except InputTooLarge as e:
        raise RequestError(413, str(e)) from None
    except DataError as e:
        raise RequestError(400, str(e)) from None
    DecodedSize(limits).add(codec.decoded_bytes(item), f"the {ctype} body")
    return [item]


def _media_range_matches(ctype: str, media_range: str | None) -> bool:
    """True when `ctype` ("image/png") is in `media_range` ("image/*")."""
    return media_range is not None and ctype.startswith(media_range.removesuffix("*"))


class AccessLog:
    """One line per request on the `headstart.access` logger: method, path, status, items, milliseconds (also as
    the record's attributes `method`, `path`, `status`, `items`, `ms`, for a structured handler).

    Hand-written because uvicorn's access log knows neither how many items a request carried nor how long its
    answer took; a plain ASGI wrapper, so the request body still streams through `read_body`'s limit.
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500  # unless a response starts: an error no handler answered

        async def send_noting_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            # the path as sent (still percent-encoded): a decoded %0A would forge a second log line
            path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
            fields = {"method": scope["method"], "path": path, "status": status,
                      "items": int(state.get(ITEMS, 0)), "ms": round(1000 * (time.perf_counter() - started), 1)}
            access_logger.info("%(method)s %(path)s %(status)d %(items)d items %(ms).1f ms", fields, extra=fields)


def create_app(predictor: Predictor, codec: InputCodec, metadata: dict[str, Any], max_batch: int = 32,
               max_wait_ms: float = 5.0, limits: Limits | None = None, access_log: bool = True) -> FastAPI:
    """The FastAPI app around a predictor (a TrainedModel or an OnnxClassifier) and its modality's codec; with
    `access_log`, one log line per request (see `AccessLog`)."""
    limits = limits or Limits()
    codec.decode_limits = limits.decode_limits()
    batcher = DynamicBatcher(predictor.scores, max_batch, max_wait_ms, limits.max_queue)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="headstart model server", version="1", lifespan=lifespan,
                  description=f"{metadata.get('backbone', '')} {predictor.task_name} model: "
                              f"{', '.join(predictor.classes)}")
    app.state.batcher = batcher
    if access_log:
        app.add_middleware(AccessLog)
    _add_error_handlers(app)
    endpoint = PredictEndpoint(predictor, codec, metadata, batcher, limits)
    _add_info_routes(app, endpoint)
    app.add_api_route("/predict", endpoint, methods=["POST"], openapi_extra=_OPENAPI_BODY, response_model=None,
                      name="predict", summary="Predict", description=PredictEndpoint.__call__.__doc__)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as a JSON body {"error": "..."} with its status (and headers: Retry-After on a 503)."""

    @app.exception_handler(RequestError)
    async def request_error(_: Request, e: RequestError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": str(e.errors()[:1])}, status_code=422)


def _add_info_routes(app: FastAPI, endpoint: PredictEndpoint) -> None:
    """GET /health (with the items queued) and GET /metadata (the model, what /predict accepts, the limits)."""
    batcher = endpoint.batcher

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued_items": batcher.queued}

    @app.get("/metadata")
    async def meta() -> dict[str, Any]:
        return {**endpoint.metadata, "classes": endpoint.predictor.classes, "accepts": endpoint.accepted,
                "max_batch": batcher.max_batch, "max_wait_ms": batcher.max_wait * 1000,
                "limits": asdict(endpoint.limits)}


class PredictEndpoint:
    """POST /predict: the body read within its limits, decoded into items, predicted in some batch, answered as
    JSON bytes made here (not through FastAPI's response model, which validated and re-encoded every answer)."""

    def __init__(self, predictor: Predictor, codec: InputCodec, metadata: dict[str, Any], batcher: DynamicBatcher,
                 limits: Limits):
        self.predictor, self.codec, self.metadata, self.batcher, self.limits = predictor, codec, metadata, batcher, limits
        self.accepted = [t for t, ok in ((JSON_TYPES[0], codec.takes_json_strings), (MULTIPART, codec.takes_uploads),
                                         (codec.raw_media_type, codec.raw_media_type is not None)) if ok]

    async def __call__(self, request: Request) -> Response:
        """Class probabilities: JSON {"inputs": [texts]} (or one text), multipart `files`, or one raw image/* or
        audio/* body, as the model takes."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        items = await self.items(request, ctype)
        setattr(request.state, ITEMS, len(items))
        try:
            probs, failures = await self.batcher.submit(items)
        except Overloaded as e:
            raise RequestError(503, f"the server is busy ({e}); retry later",
                               {"Retry-After": str(self.limits.retry_after_s)}) from None
        except ItemRejected as e:
            where = f"files[{e.index}]" if ctype == MULTIPART else f"inputs[{e.index}]"
            raise RequestError(422, f"{where}: the model cannot take this item ({_short(e.reason)})") from None
        return Response(dumps({"predictions": _records(probs, dict(failures), self.predictor)}),
                        media_type="application/json")

    async def items(self, request: Request, ctype: str) -> list:
        """The request's items, decoded and within the limits; a RequestError (4xx) naming what is wrong."""
        codec, limits = self.codec, self.limits
        raw = _media_range_matches(ctype, codec.raw_media_type)
        if ctype not in self.accepted and not raw:
            raise RequestError(415, f"content type '{ctype or 'none'}' is not accepted; this "
                                    f"{self.metadata['modality']} model takes {' or '.join(self.accepted)}")
        body = await read_body(request, limits.max_body_bytes)
        if not body:
            raise RequestError(400, "the body is empty")
        if ctype == MULTIPART:
            return (await upload_items(request, body, codec, limits))[0]
        if raw:
            return await raw_item(body, ctype, codec, limits)
        return json_items(body, codec, limits)


def _records(probs, failures: dict[int, str], predictor: Predictor) -> list[dict[str, Any]]:
    task, params = predictor.task_name, predictor.task_params
    return [{"error": failures[i]} if i in failures else prediction_record(row, predictor.classes, 3, task, params)
            for i, row in enumerate(probs)]
