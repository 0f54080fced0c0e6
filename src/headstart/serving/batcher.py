"""Dynamic batching: requests that arrive together run as one model call.

Hand-written rather than taken from a serving framework (Triton, Ray Serve, BentoML) because those bring their own
server, process model and dependencies; the idea is small: one asyncio task takes the first waiting request, then
keeps taking requests until `max_batch` items are collected or `max_wait_ms` has passed since the first, runs
the model once in a worker thread (the event loop keeps accepting requests meanwhile), and hands each request
its rows. The queue is bounded in items: a request that would overflow it is refused at once (the server answers
503 with Retry-After) instead of waiting until the client times out.

Requests are isolated: when a batch's model call raises, each request is run again alone, and a request that
still fails is run item by item, so an item the model cannot take fails only its own request (ItemRejected,
naming it), never the other clients' requests that happened to share its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Scores = tuple[np.ndarray, list[tuple[int, str]]]


class Overloaded(Exception):
    """The queue is full: the caller should retry later."""


# What a model call raises when an item is what it cannot take (a tokenizer on text it cannot encode, a shape it
# cannot run); anything else (out of memory, a broken engine) is the server's fault and answered as such.
ITEM_ERRORS = (ValueError, TypeError, UnicodeError, IndexError, KeyError)


class ItemRejected(Exception):
    """The model raised on item `index` of a request, run alone; `reason` is the exception, as text."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"item {index}: {reason}")
        self.index, self.reason = index, reason


@dataclass
class _Request:
    items: Sequence
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """Collects items from concurrent requests into batches for `predict` (items -> (probabilities, failures))."""

    def __init__(self, predict: Callable[[Sequence], Scores], max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 256):
        self.predict = predict
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000
        self.max_queue = max(1, int(max_queue))
        self.queued = 0  # items waiting or running
        self.batches = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="headstart-model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, items: Sequence) -> Scores:
        """Probabilities and failures for `items`, computed in some batch; Overloaded if the queue is full."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self.queued + len(items) > self.max_queue and self.queued > 0:
            raise Overloaded(f"{self.queued} items are queued (limit {self.max_queue})")
        self.queued += len(items)
        request = _Request(items, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(request)
        return await request.future

    async def _collect(self) -> list[_Request]:
        """The first waiting request, and more until max_batch items or max_wait has passed."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        size = len(batch[0].items)
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while size < self.max_batch:
            try:
                request = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            batch.append(request)
            size += len(request.items)
        return batch

    async def _run(self) -> None:
        while True:
            await self._run_batch(await self._collect())

    async def _run_batch(self, batch: list[_Request]) -> None:
        """One model call for `batch` (its own method, so that nothing holds the decoded items after it: as a
        local of `_run` the batch stayed alive while the next was awaited, hundreds of MB for large images)."""
        loop = asyncio.get_running_loop()
        items = [item for request in batch for item in request.items]
        try:
            probs, failures = await loop.run_in_executor(self._executor, self.predict, items)
        except Exception:  # some item broke the call: find it, and let only its request fail
            for request in batch:
                await self._run_alone(request)
        else:
            self._deliver(batch, probs, failures)
        finally:
            self.queued -= len(items)
            self.batches += 1

    async def _run_alone(self, request: _Request) -> None:
        """One request's items in a call of their own; if that raises, item by item to name the one that does."""
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, self.predict, request.items)
        except Exception:
            try:
                result = await self._item_by_item(request.items)
            except Exception as e:  # the model itself failed (not an item): a server error, for this request only
                result = e
        if not request.future.done():
            if isinstance(result, Exception):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)

    async def _item_by_item(self, items: Sequence) -> Scores | ItemRejected:
        loop = asyncio.get_running_loop()
        rows, failures = [], []
        for i, item in enumerate(items):
            try:
                probs, failed = await loop.run_in_executor(self._executor, self.predict, [item])
            except ITEM_ERRORS as e:  # the item is what the model cannot take; anything else is the server's fault
                return ItemRejected(i, f"{type(e).__name__}: {e}")
            rows.append(probs[0])
            failures += [(i, reason) for _, reason in failed]
        return np.stack(rows), failures

    @staticmethod
    def _deliver(batch: list[_Request], probs: np.ndarray, failures: list[tuple[int, str]]) -> None:
        start = 0
        for request in batch:
            end = start + len(request.items)
            mine = [(i - start, reason) for i, reason in failures if start <= i < end]
            if not request.future.done():  # a client that went away has a cancelled future
                request.future.set_result((probs[start:end], mine))
            start = end
