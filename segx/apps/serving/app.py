"""The HTTP service: ``segx --serve --pipeline semantic_segmentation``.

Routes (compatible with the reference): ``GET /health`` and ``POST /semantic-segmentation``
with ``{"image": "<base64 of the file bytes, or an http(s) URL>"}``, answering
``{"logId", "errorCode", "errorMsg", "result": {"labelMap", "size", "image"}}``.

Built to face a network (docs/security.md):

* every client mistake is a 4xx with a clear ``errorMsg``, and the connection stays usable;
* a bad image fails only its own request, never the requests batched with it;
* image bytes are checked by their magic bytes (PNG, JPEG, BMP unless configured) and their
  size read from the header before anything is decoded (``max_pixels``), decoded by Pillow;
  decoded images in flight share a memory budget;
* the body is read as a stream with a byte limit and a deadline; each request has a total
  deadline;
* URL inputs are off unless hosts are allowed (``--allow-url-hosts``); then private, loopback,
  link-local and metadata addresses are refused after DNS resolution and on every redirect, the
  connection goes to the checked address, and every fetch failure reads the same;
* an optional API key (``--api-key`` or ``SEGX_API_KEY``).

Inference runs in one engine thread off the event loop; requests that arrive together are
inferred as one batch.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import os
import uuid
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request  # at module level: FastAPI resolves annotations here
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect

from segx.config import Config
from segx.utils.errors import SegxError
from segx.apps.serving.batcher import Batcher
from segx.apps.serving.budget import Charge, MemoryBudget, engine_bpp, request_cost
from segx.apps.serving.untrusted import ClientError, ImagePolicy, UrlFetcher, decode_image

log = logging.getLogger("segx.serving")
ROUTE = "/semantic-segmentation"
API_KEY_ENV = "SEGX_API_KEY"


# --------------------------------------------------------------------------- the API's models
class InferRequest(BaseModel):
    """The request body."""

    model_config = ConfigDict(extra="ignore")
    image: str = Field(description="base64 of the image file's bytes, or an http(s) URL "
                                   "(when the server allows URL hosts)")


class InferResult(BaseModel):
    labelMap: list[int] = Field(description="class ids, row-major, height x width values")
    size: list[int] = Field(description="[height, width]")
    image: str = Field(description="base64 PNG whose pixel values are the class ids")


class InferResponse(BaseModel):
    """Every answer's envelope; ``result`` only on success."""

    logId: str
    errorCode: int
    errorMsg: str
    result: InferResult | None = None


def _envelope(code: int, message: str) -> dict:
    return {"logId": str(uuid.uuid4()), "errorCode": code, "errorMsg": message}


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Limits:
    """The ``Serving`` section, typed."""

    max_body: int
    max_in_flight: int
    max_batch: int
    batch_wait_s: float
    body_timeout_s: float
    request_timeout_s: float

    @classmethod
    def from_config(cls, serving: dict) -> "Limits":
        return cls(int(serving["max_body_mb"] * 1024 * 1024), serving["max_in_flight"],
                   serving["max_batch"], serving["batch_wait_ms"] / 1000,
                   serving["body_timeout_s"], serving["request_timeout_s"])


# --------------------------------------------------------------------------- rendering
_DIGITS = np.zeros((256, 4), np.uint8)
_WIDTH = np.zeros(256, np.int64)
for _v in range(256):
    _text = f"{_v},".encode()
    _DIGITS[_v, :len(_text)] = np.frombuffer(_text, np.uint8)
    _WIDTH[_v] = len(_text)


CHUNK = 1 << 20  # pixels turned into text at a time: bounded working memory for any size


def _int_list(values: np.ndarray) -> list[bytes]:
    """``values`` as the body of a JSON list ('0,1,1,2'), in parts, vectorised for 0..255."""
    flat = values.ravel()
    small = not flat.size or (flat.min() >= 0 and flat.max() <= 255)
    parts = []
    for start in range(0, flat.size, CHUNK):
        part = flat[start:start + CHUNK]
        if small:
            part = part.astype(np.uint8)
            keep = np.arange(4) < _WIDTH[part][:, None]
            parts.append(_DIGITS[part][keep].tobytes())
        else:
            parts.append(json.dumps(part.tolist())[1:-1].encode() + b",")
    if parts:
        parts[-1] = parts[-1][:-1]
    return parts


def render(pred: np.ndarray) -> bytes:
    """The success body: the label map row-major, its size, and a palette PNG of it (bytes
    built directly: ``json.dumps`` of a 512 x 512 list costs far more than inference)."""
    from segx.imaging.palette import id_image
    buf = io.BytesIO()
    id_image(pred).save(buf, format="PNG", compress_level=1)
    png = base64.b64encode(buf.getbuffer())
    del buf
    h, w = pred.shape
    head = json.dumps(_envelope(0, "Success"), separators=(",", ":"))[:-1]
    return b"".join([head.encode(), b',"result":{"labelMap":[', *_int_list(pred),
                     f'],"size":[{h},{w}],"image":"'.encode(), png, b'"}}'])


# --------------------------------------------------------------------------- request handling
async def read_body(request: Request, limits: Limits, budget: "MemoryBudget") -> bytes:
    """The body, streamed: 413 past the byte limit (also without Content-Length), 408 past the
    body deadline, 503 when the bodies being received together exceed their share of memory.
    The caller releases ``len(body)`` from ``budget``."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limits.max_body:
        raise ClientError(413, f"the request is larger than {limits.max_body / 2**20:g} MB.")
    data = bytearray()

    async def collect() -> None:
        async for chunk in request.stream():
            if len(data) + len(chunk) > limits.max_body:
                raise ClientError(413, f"the request is larger than "
                                       f"{limits.max_body / 2**20:g} MB.")
            if not budget.try_take(len(chunk)):
                raise ClientError(503, "the server is busy receiving other requests; retry "
                                       "shortly.")
            data.extend(chunk)
    try:
        await asyncio.wait_for(collect(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        budget.give(len(data))
        raise ClientError(408, f"the request body did not arrive within "
                               f"{limits.body_timeout_s:g} s.") from None
    except ClientDisconnect:
        budget.give(len(data))
        raise ClientError(400, "the client went away before sending the body.") from None
    except BaseException:
        budget.give(len(data))
        raise
    return bytes(data)


def parse_request(raw: bytes) -> InferRequest:
    """The JSON body as an :class:`InferRequest` (400 bad JSON, 422 a missing/mistyped field)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # bad JSON, a 5,000-digit number, deep nesting
        raise ClientError(400, "the request body is not valid JSON (or nests too deep, or has a "
                               'number too long); send {"image": "<base64 or URL>"}.') from None
    try:
        req = InferRequest.model_validate(body)
    except ValidationError:
        raise ClientError(422, 'the request needs a string field "image" (base64 of the '
                               "file bytes, or an http(s) URL).") from None
    if not req.image.strip():
        raise ClientError(400, 'the field "image" is empty.')
    return req


async def image_bytes(req: InferRequest, fetcher: UrlFetcher, charge: "Charge") -> bytes:
    """The image file's bytes; fetched bytes are charged to the budget as they arrive (twice:
    the buffer and the bytes made of it), decoded base64 before it is decoded."""
    if req.image.lstrip().lower().startswith(("http://", "https://")):
        return await fetcher.fetch(req.image.strip(), lambda n: charge.take_now(2 * n))
    await charge.to(len(req.image) * 3 // 4)
    try:
        return base64.b64decode(req.image, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(400, '"image" is neither an http(s) URL nor valid base64.') from None


class Answer(Response):
    """The success body; the request's charge is given back once it is sent (or the client
    has gone)."""

    media_type = "application/json"

    def __init__(self, body: bytes, charge: Charge):
        super().__init__(body)
        self.charge = charge

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.body = b""
            self.charge.close()


async def receive(request: Request, charge: Charge) -> bytes:
    """Body -> request -> image bytes; nothing counts as in flight until the body is in."""
    state = request.app.state
    raw = await read_body(request, state.limits, state.bodies)
    try:
        req = parse_request(raw)
    finally:
        state.bodies.give(len(raw))
        del raw
    return await image_bytes(req, state.fetcher, charge)


async def infer(request: Request, data: bytes, charge: Charge) -> bytes:
    """Checked image bytes -> decode -> pre-process -> batched inference -> the response body,
    each step charged to the budget before it runs."""
    from starlette.concurrency import run_in_threadpool
    state = request.app.state
    pixels = state.policy.check(data)  # format and pixel count from the header, no decoding
    await charge.to(request_cost(len(data), pixels, pixels, state.engine_bpp))
    rgb = await run_in_threadpool(decode_image, data, state.policy)
    tensor, info = await run_in_threadpool(state.model.preprocess, rgb)
    del rgb  # the model input is all the engine needs
    model_pixels = tensor.shape[1] * tensor.shape[2]
    await charge.to(request_cost(len(data), pixels, model_pixels, state.engine_bpp))
    pred = await state.batcher.submit(tensor, info)
    del tensor
    return await run_in_threadpool(render, pred)


# --------------------------------------------------------------------------- the app
def _install_handlers(app: FastAPI) -> None:
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # noqa: ARG001
        return JSONResponse(_envelope(exc.status_code, str(exc.detail)),
                            status_code=exc.status_code)

    @app.exception_handler(ClientError)
    async def client_error(request, exc):  # noqa: ARG001
        return JSONResponse(_envelope(exc.status, exc.message), status_code=exc.status)

    @app.exception_handler(SegxError)
    async def bad_image(request, exc):  # noqa: ARG001 - e.g. smaller than the model accepts
        return JSONResponse(_envelope(400, str(exc)), status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request, exc):  # noqa: ARG001
        log.exception("request failed")
        return JSONResponse(_envelope(500, f"internal server error ({type(exc).__name__})"),
                            status_code=500)


def _authorised(request: Request, key: str | None) -> bool:
    if not key:
        return True
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:].strip()
    return hmac.compare_digest(given.encode(), key.encode())


def _install_routes(app: FastAPI) -> None:
    @app.get("/health", response_model=InferResponse)
    async def health():
        return _envelope(0, "Healthy")

    @app.post(ROUTE, response_model=InferResponse,
              responses={400: {"model": InferResponse}, 401: {"model": InferResponse},
                         408: {"model": InferResponse}, 413: {"model": InferResponse},
                         415: {"model": InferResponse}, 422: {"model": InferResponse},
                         503: {"model": InferResponse}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": InferRequest.model_json_schema()}}}})
    async def segment(request: Request):
        state = request.app.state
        if not _authorised(request, state.api_key):
            raise ClientError(401, "a valid API key is required (header X-API-Key or "
                                   "Authorization: Bearer).")
        charge = Charge(state.budget)
        try:
            return Answer(await answer(request, charge), charge)
        except BaseException:
            charge.close()
            raise


async def answer(request: Request, charge: Charge) -> bytes:
    """The success body of one inference request (its memory charged to ``charge``)."""
    state = request.app.state
    data = await receive(request, charge)
    if state.in_flight >= state.limits.max_in_flight:
        raise ClientError(503, f"the server is busy ({state.in_flight} requests in "
                               "flight); retry shortly.")
    state.in_flight += 1
    try:
        body = await asyncio.wait_for(infer(request, data, charge),
                                      state.limits.request_timeout_s)
        await charge.to(len(data) + len(body))  # what stays until the answer is sent
        return body
    except asyncio.TimeoutError:
        raise ClientError(503, f"the request took longer than "
                               f"{state.limits.request_timeout_s:g} s; retry.") from None
    finally:
        state.in_flight -= 1


def create_app(config: Config, api_key: str | None = None,
               fetcher: UrlFetcher | None = None) -> FastAPI:
    """The FastAPI app for a pipeline config (see ``segx.pipelines``).

    Args:
        config: the pipeline config (``Pipeline`` and ``Serving`` sections).
        api_key: a key every inference request must carry (default ``$SEGX_API_KEY``).
        fetcher: the URL fetcher (default: one built from the ``Serving`` section).
    """
    from contextlib import asynccontextmanager

    from segx.pipelines import SemanticSegmentationPipeline
    serving = config["Serving"]
    limits = Limits.from_config(serving)
    policy = ImagePolicy(serving["max_pixels"], tuple(serving["formats"]))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pipeline = SemanticSegmentationPipeline(config)
        model = app.state.model = pipeline.model
        app.state.engine_bpp = engine_bpp(model.engine, model.num_classes)
        app.state.batcher = Batcher(lambda batch: model._infer(batch, [None] * len(batch)),
                                    limits.max_batch, limits.batch_wait_s)
        app.state.batcher.start()
        app.state.fetcher = fetcher or UrlFetcher(serving["allow_url_hosts"],
                                                  serving["url_timeout_s"], limits.max_body)
        log.info(startup_line(model, config["Pipeline"]["model"]))
        try:
            yield
        finally:
            await app.state.batcher.stop()
            pipeline.close()

    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    docs = {} if api_key is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="segx semantic segmentation", lifespan=lifespan, **docs)
    app.state.limits, app.state.policy, app.state.in_flight = limits, policy, 0
    app.state.budget = MemoryBudget(int(serving["memory_budget_mb"] * 2**20))
    app.state.bodies = MemoryBudget(int(serving["memory_budget_mb"] * 2**20) // 4)
    app.state.api_key = api_key
    _install_handlers(app)
    _install_routes(app)
    return app


def startup_line(model, source: str) -> str:
    """What the service serves, said once at start: model, where from, engine and precision,
    device and classes (the first 20 by name)."""
    names = model.class_names
    shown = ", ".join(names[:20]) + (f" ... ({len(names) - 20} more)" if len(names) > 20 else "")
    classes = f"{model.num_classes or len(names) or '?'} classes" + (f": {shown}" if names else "")
    return (f"serving {model.model_name} from {source} on {model.device}, engine {model.engine} "
            f"({model.precision}), {classes}")


def serve(config: Config, host: str = "127.0.0.1", port: int = 8080,
          api_key: str | None = None) -> None:
    """Run the service until SIGINT/SIGTERM (uvicorn shuts down cleanly)."""
    import uvicorn
    logging.basicConfig(level=logging.INFO)
    if host not in ("127.0.0.1", "localhost", "::1") and not (api_key or
                                                              os.environ.get(API_KEY_ENV)):
        log.warning("serving on %s without an API key: anyone who can reach this port can use "
                    "it (see docs/security.md)", host)
    uvicorn.run(create_app(config, api_key), host=host, port=port, log_level="info",
                timeout_keep_alive=5, limit_concurrency=config["Serving"]["max_connections"])
