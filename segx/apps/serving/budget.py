"""The server's memory budget: what one request costs, charged before its work is done, so
that images in flight together never exceed ``Serving.memory_budget``."""
from __future__ import annotations

import asyncio

from segx.apps.serving.untrusted import ClientError


# What one request costs, in bytes, charged before the work is done (docs/security.md). Measured
# as peak RSS growth (VmHWM after clear_refs) of one request's path below (decode ->
# pre-process -> engine -> class map -> answer), the engine's first run at that size, on
# PP-LiteSeg-T exports (19 classes, Normalize only, so the model sees every pixel), JPEGs of
# 1, 4 and 9 MP, AMD EPYC, numpy 1.26, Pillow 11 (tests/test_serving_budget.py re-measures):
# - without the engine (a stub returning the class map): 12-19 bytes per decoded pixel
#   (Pillow's decode 4 + RGB array 3, then float32 input 12, class map 4, answer text <= 4);
# - the whole path: Paddle (oneDNN) 353-383, OpenVINO 207-214, dynamic graph 257 per pixel.
# INPUT_BPP charges the decoded pixels, ENGINE_BPP each model-input pixel (about 10% above the
# figures measured, ONNX Runtime taken as Paddle), CLASS_BPP each class beyond the 19 measured
# (its full-size float32 logits and their upsampled copy).
INPUT_BPP = 24
ENGINE_BPP = {"paddle": 400, "openvino": 220, "onnxruntime": 400, "dynamic": 400}
CLASS_BPP = 8
MEASURED_CLASSES = 19


def engine_bpp(engine: str, num_classes: int | None) -> int:
    """Bytes per model-input pixel the engine ``engine`` (``SegModel.engine``) spends."""
    base = next((v for k, v in ENGINE_BPP.items() if engine.startswith(k)), max(ENGINE_BPP.values()))
    return base + CLASS_BPP * max(0, (num_classes or MEASURED_CLASSES) - MEASURED_CLASSES)


def request_cost(data_bytes: int, pixels: int, model_pixels: int, per_model_pixel: int) -> int:
    """The memory one image request holds at its peak: its file bytes, its decoded pixels and
    the engine's work on its model input."""
    return data_bytes + pixels * INPUT_BPP + model_pixels * per_model_pixel


class MemoryBudget:
    """Bytes in flight. ``acquire`` waits briefly for room, then 503; ``try_take`` never
    waits."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self.cond = asyncio.Condition()

    def try_take(self, amount: int) -> bool:
        if self.used + amount > self.total:
            return False
        self.used += amount
        return True

    def give(self, amount: int) -> None:
        """Give back at once (no await: safe in ``finally`` and on cancellation); waiters
        are woken by a task."""
        self.used -= amount
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self.cond:
            self.cond.notify_all()

    async def acquire(self, amount: int, wait_s: float = 5.0, whole: int = 0) -> None:
        """Take ``amount`` (of a request's ``whole`` cost): 413 when the whole can never fit."""
        if max(amount, whole) > self.total:
            raise ClientError(413, "the image needs more memory than the server's budget for "
                                   "all requests.")
        async with self.cond:
            try:
                await asyncio.wait_for(self.cond.wait_for(lambda: self.used + amount
                                                          <= self.total), wait_s)
            except asyncio.TimeoutError:
                raise ClientError(503, "the server is busy with large images; retry "
                                       "shortly.") from None
            self.used += amount



class Charge:
    """One request's share of the memory budget: raised as its cost becomes known, given back
    once, after the answer is sent."""

    BUSY = "the server's memory budget is taken by other requests; retry shortly."

    def __init__(self, budget: MemoryBudget):
        self.budget, self.held = budget, 0

    def take_now(self, amount: int) -> None:
        """For bytes streaming in: never waits, 503 when there is no room."""
        if not self.budget.try_take(amount):
            raise ClientError(503, self.BUSY)
        self.held += amount

    async def to(self, amount: int) -> None:
        """Hold ``amount`` in all (waits briefly for room; 413 when it never fits)."""
        if amount > self.held:
            await self.budget.acquire(amount - self.held, whole=amount)
        elif amount < self.held:
            self.budget.give(self.held - amount)
        self.held = amount

    def close(self) -> None:
        if self.held:
            self.budget.give(self.held)
            self.held = 0
