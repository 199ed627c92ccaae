"""Batching for the server: concurrent requests collected into batches for one engine thread,
a failed batch retried image by image, and freed heap returned to the system."""
from __future__ import annotations

import asyncio

import numpy as np


TRIM_PIXELS = 1 << 20  # after a batch of this many model-input pixels, return freed memory


def trim_heap() -> None:
    """Give the heap's free memory back to the system (glibc ``malloc_trim``; elsewhere a
    no-op). Without it each new image size left about 30 MB more RSS on OpenVINO (3 MB with
    it), measured at 1 MP."""
    import ctypes
    import ctypes.util
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Batcher:
    """Collects concurrent requests into batches for one engine thread. ``run`` is the engine
    (N x 3 x h x w model inputs -> N outputs); images of one shape are inferred together and
    their outputs turned into class maps at the original size. When a batch fails, its images
    are retried one by one, so only the bad one fails."""

    def __init__(self, run, max_batch: int, wait_s: float):
        from concurrent.futures import ThreadPoolExecutor
        self.run, self.max_batch, self.wait_s = run, max_batch, wait_s
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

    async def submit(self, tensor: np.ndarray, info: list) -> np.ndarray:
        """The class map of one pre-processed image (3 x h x w and its ``trans_info``)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(((tensor, info), future))
        return await future

    def _maps(self, items: list) -> list:
        from segx.inference.evaluation import class_map
        batch = items[0][0][None] if len(items) == 1 else np.stack([t for t, _ in items])
        outs = self.run(batch)
        del batch
        return [class_map(o, info) for o, (_, info) in zip(outs, items)]

    def _alone(self, item):
        try:
            return self._maps([item])[0]
        except Exception as exc:  # noqa: BLE001 - handed to its own request only
            return exc

    def _predict(self, items: list) -> list:
        """Class maps (or the exception) per image: each shape at once, else one by one."""
        out: list = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for k, (tensor, _) in enumerate(items):
            groups.setdefault(tensor.shape, []).append(k)
        for ks in groups.values():
            try:
                maps = self._maps([items[k] for k in ks])
            except Exception as exc:  # noqa: BLE001 - isolate the image that breaks the batch
                maps = [self._alone(items[k]) for k in ks] if len(ks) > 1 else [exc]
            for k, m in zip(ks, maps):
                out[k] = m
        if sum(t.size for t, _ in items) >= 3 * TRIM_PIXELS:
            trim_heap()
        return out

    async def _collect(self) -> list:
        loop = asyncio.get_running_loop()
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
        return [(a, f) for a, f in items if not f.done()]  # drop requests already gone

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            if not items:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self._predict,
                                                     [a for a, _ in items])
            except Exception as exc:  # noqa: BLE001 - never leave a request waiting
                results = [exc] * len(items)
            for (_, f), res in zip(items, results):
                if f.done():
                    continue
                if isinstance(res, BaseException):
                    f.set_exception(res)
                else:
                    f.set_result(res)
            del items, results
