"""The HTTP service: ``segx --serve --pipeline semantic_segmentation``.

Routes (compatible with the reference): ``GET /health`` and ``POST /semantic-segmentation``
with ``{"image": "<base64 of the file bytes, or an http(s) URL>"}``, answering
``{"logId", "errorCode", "errorMsg", "result": {"labelMap", "size", "image"}}``.

Client mistakes get 4xx with a clear ``errorMsg`` (400 bad JSON, base64, image or URL; 413 too
large; 422 a missing or mistyped field; 503 too many requests in flight). Inference runs off the
event loop in one engine thread; requests that arrive together are inferred as one batch.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import cv2
import numpy as np
from fastapi import Request  # at module level: FastAPI resolves the string annotations here

log = logging.getLogger("segx.serving")
ROUTE = "/semantic-segmentation"


class ClientError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _envelope(code: int, message: str, result: Any = None) -> dict:
    body = {"logId": str(uuid.uuid4()), "errorCode": code, "errorMsg": message}
    if result is not None:
        body["result"] = result
    return body


class Batcher:
    """Collects concurrent requests into batches for one engine thread."""

    def __init__(self, model, max_batch: int, wait_s: float):
        self.model, self.max_batch, self.wait_s = model, max_batch, wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segx-engine")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, bgr: np.ndarray):
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((bgr, future))
        return await future

    def _predict(self, arrays: list) -> list:
        return list(self.model.predict(arrays, len(arrays)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(items) < self.max_batch:
                try:
                    items.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            arrays = [a for a, _ in items]
            try:
                results = await loop.run_in_executor(self.executor, self._predict, arrays)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, f in items:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for (_, f), res in zip(items, results):
                if not f.done():
                    f.set_result(res)


def _decode_image(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ClientError(400, "the data is not an image OpenCV can decode "
                               "(send the bytes of a JPEG, PNG, BMP, TIFF or WebP file).")
    return img


_DIGITS = np.zeros((256, 4), np.uint8)
_WIDTH = np.zeros(256, np.int64)
for _v in range(256):
    _text = f"{_v},".encode()
    _DIGITS[_v, :len(_text)] = np.frombuffer(_text, np.uint8)
    _WIDTH[_v] = len(_text)


def _int_list(values: np.ndarray) -> bytes:
    """``values`` (0..255) as the body of a JSON list, vectorised: '0,1,1,2'."""
    flat = values.ravel().astype(np.intp)
    keep = np.arange(4) < _WIDTH[flat][:, None]
    return _DIGITS[flat][keep].tobytes()[:-1]


def _render(res) -> bytes:
    """The success body: the label map row-major, its size, and a palette PNG of it."""
    buf = io.BytesIO()
    res.img.save(buf, format="PNG", compress_level=1)
    h, w = res.pred.shape
    if res.pred.size and (res.pred.min() < 0 or res.pred.max() > 255):
        label_map = json.dumps(res.pred.ravel().tolist())[1:-1].encode()
    else:
        label_map = _int_list(res.pred)
    head = json.dumps(_envelope(0, "Success"), separators=(",", ":"))[:-1]
    return b"".join([head.encode(), b',"result":{"labelMap":[', label_map,
                     f'],"size":[{h},{w}],"image":"'.encode(), base64.b64encode(buf.getvalue()),
                     b'"}}'])


def create_app(config: dict):
    """The FastAPI app for a pipeline config (see ``segx.pipelines``)."""
    import httpx
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    from segx.pipelines import SemanticSegmentationPipeline
    serving = config["Serving"]
    max_body = int(serving["max_body_mb"] * 1024 * 1024)
    state: dict[str, Any] = {"in_flight": 0}

    @asynccontextmanager
    async def lifespan(app):  # noqa: ARG001
        pipeline = SemanticSegmentationPipeline(config)
        batcher = Batcher(pipeline.model, serving["max_batch"], serving["batch_wait_ms"] / 1000)
        batcher.start()
        state["batcher"] = batcher
        state["http"] = httpx.AsyncClient(timeout=serving["url_timeout_s"],
                                          follow_redirects=True)
        log.info("serving %r", pipeline.model)
        try:
            yield
        finally:
            await batcher.stop()
            await state["http"].aclose()
            pipeline.close()

    app = FastAPI(title="segx semantic segmentation", lifespan=lifespan)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # noqa: ARG001
        return JSONResponse(_envelope(exc.status_code, str(exc.detail)),
                            status_code=exc.status_code)

    @app.exception_handler(ClientError)
    async def client_error(request, exc):  # noqa: ARG001
        return JSONResponse(_envelope(exc.status, exc.message), status_code=exc.status)

    @app.exception_handler(Exception)
    async def internal_error(request, exc):  # noqa: ARG001
        log.exception("request failed")
        return JSONResponse(_envelope(500, f"internal server error ({type(exc).__name__})"),
                            status_code=500)

    @app.get("/health")
    async def health():
        return _envelope(0, "Healthy")

    async def _fetch(url: str) -> bytes:
        try:
            async with state["http"].stream("GET", url) as resp:
                if resp.status_code >= 400:
                    raise ClientError(400, f"fetching {url} returned HTTP {resp.status_code}.")
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > max_body:
                        raise ClientError(413, f"the image at {url} is larger than "
                                               f"{serving['max_body_mb']} MB.")
                return bytes(data)
        except httpx.HTTPError as exc:
            raise ClientError(400, f"cannot fetch {url} ({type(exc).__name__}: {exc}).") \
                from None

    async def _image(request: Request) -> np.ndarray:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_body:
            raise ClientError(413, f"the request is larger than {serving['max_body_mb']} MB.")
        raw = await request.body()
        if len(raw) > max_body:
            raise ClientError(413, f"the request is larger than {serving['max_body_mb']} MB.")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ClientError(400, "the request body is not valid JSON; send "
                                   '{"image": "<base64 or URL>"}.') from None
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise ClientError(422, 'the request needs a string field "image" (base64 of the '
                                   "file bytes, or an http(s) URL).")
        image = body["image"]
        if image.startswith(("http://", "https://")):
            data = await _fetch(image)
        else:
            try:
                data = base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError):
                raise ClientError(400, '"image" is neither an http(s) URL nor valid '
                                       "base64.") from None
        return await run_in_threadpool(_decode_image, data)

    @app.post(ROUTE)
    async def infer(request: Request):
        if state["in_flight"] >= serving["max_in_flight"]:
            raise ClientError(503, f"the server is busy ({state['in_flight']} requests in "
                                   "flight); retry shortly.")
        state["in_flight"] += 1
        try:
            bgr = await _image(request)
            res = await state["batcher"].submit(bgr)
            return Response(await run_in_threadpool(_render, res),
                            media_type="application/json")
        finally:
            state["in_flight"] -= 1

    return app


def serve(config: dict, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the service until SIGINT/SIGTERM (uvicorn shuts down cleanly)."""
    import uvicorn
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(create_app(config), host=host, port=port, log_level="info")
