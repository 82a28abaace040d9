"""Micro-batching: concurrent requests share model calls, run in a thread off the event loop.

Requests put their items on a queue and await a future. One worker task takes what is
queued, waits a bounded time for more only while other prediction requests are in flight
(a lone request is never delayed), runs one model call per model in a model thread, and
resolves every future. At most `concurrency` model calls run at once (image decoding and
most of the model release the GIL, so two calls use two cores); while they run, new requests
queue up for the next call: the busier the service, the bigger the batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field

from rakuten_mlops.inference.model_io import ItemPrediction
from rakuten_mlops.serving.prediction.model_manager import LoadedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelItem:
    """What the model needs of one product."""

    designation: str
    description: str = ""
    image_bytes: bytes | None = None


@dataclass(frozen=True)
class BatchResult:
    """The predictions of a job and how long the model call that made them took."""

    predictions: list[ItemPrediction]
    model_seconds: float
    batch_size: int


class _Arrival:
    """A request announced to the batcher; `done` withdraws it once."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher: MicroBatcher | None = batcher

    def done(self) -> None:
        if self._batcher is not None:
            self._batcher.arriving -= 1
            self._batcher = None


_arrival_var: ContextVar[_Arrival | None] = ContextVar("batcher_arrival", default=None)


@dataclass
class _Job:
    model: LoadedModel
    items: list[ModelItem]
    future: asyncio.Future[BatchResult]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Groups the items of concurrent requests into shared model calls."""

    def __init__(self, max_size: int = 64, max_wait_s: float = 0.005, concurrency: int = 2) -> None:
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.concurrency = concurrency
        # Prediction requests received but not yet queued (see `expect`): how many may come.
        self.arriving = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="model")
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the worker on the running loop."""
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Finish the queued jobs, then stop the worker and the model thread."""
        if self._queue is not None and self._worker is not None:
            await self._queue.join()
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    def expect(self) -> _Arrival:
        """Announce a prediction request (the middleware calls it when one starts).

        Its first `predict` call, or `arrival.done()` when it ends without one, withdraws it.
        """
        self.arriving += 1
        arrival = _Arrival(self)
        _arrival_var.set(arrival)
        return arrival

    async def predict(self, model: LoadedModel, items: list[ModelItem]) -> BatchResult:
        """Predict `items` with `model`, sharing the call with concurrent requests."""
        if self._queue is None:
            raise RuntimeError("the micro-batcher is not started")
        arrival = _arrival_var.get()
        if arrival is not None:
            arrival.done()
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(model, items, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None and self._slots is not None
        queue, slots = self._queue, self._slots
        while True:
            jobs = [await queue.get()]
            # Wait for a free model slot first: meanwhile requests pile up into one batch.
            await slots.acquire()
            size = len(jobs[0].items)
            deadline = time.perf_counter() + self.max_wait_s
            while size < self.max_size:
                if queue.empty():
                    # Others are on their way (parsing their request): wait for them, bounded.
                    waiting = self.arriving > 0
                    remaining = deadline - time.perf_counter()
                    if not waiting or remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    job = queue.get_nowait()
                jobs.append(job)
                size += len(job.items)
            task = asyncio.get_running_loop().create_task(self._run_and_release(jobs))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_and_release(self, jobs: list[_Job]) -> None:
        assert self._queue is not None and self._slots is not None
        try:
            await self._run_jobs(jobs)
        finally:
            self._slots.release()
            for _ in jobs:
                self._queue.task_done()

    async def _run_jobs(self, jobs: list[_Job]) -> None:
        by_model: dict[int, list[_Job]] = {}
        for job in jobs:
            by_model.setdefault(id(job.model), []).append(job)
        loop = asyncio.get_running_loop()
        for group in by_model.values():
            items = [item for job in group for item in job.items]
            try:
                predictions, seconds = await loop.run_in_executor(
                    self._executor, _predict_items, group[0].model, items
                )
            except Exception as exc:
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            start = 0
            for job in group:
                part = predictions[start : start + len(job.items)]
                start += len(job.items)
                if not job.future.done():
                    job.future.set_result(BatchResult(part, seconds, len(items)))


def _predict_items(
    model: LoadedModel, items: list[ModelItem]
) -> tuple[list[ItemPrediction], float]:
    """One model call for `items` (runs in a model thread)."""
    with_bytes = any(item.image_bytes for item in items)
    t0 = time.perf_counter()
    predictions = model.predict_products(
        [item.designation for item in items],
        [item.description for item in items],
        [item.image_bytes for item in items] if with_bytes else None,
    )
    return predictions, time.perf_counter() - t0
