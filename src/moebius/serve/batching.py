"""A bounded micro-batching queue: concurrent requests of one size and one set of options become one
pipeline call, so one U-Net forward per step serves several users
(IOPaint serves one request at a time behind a global lock).

One asyncio task owns the queue; the pipeline runs on one worker thread, so the model is never entered
twice at once. While a batch runs, new requests wait in the queue and the compatible ones leave together
in the next batch. The queue is bounded: a full queue raises :class:`QueueFull` (the route answers 503 with
``Retry-After``); a request that waits past its timeout is dropped from the queue (504), never run late.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already; try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class RequestTimeout(Exception):
    """A request was not answered within its time limit."""


@dataclass(eq=False)  # compared by identity: jobs hold arrays
class Job:
    """One image to inpaint. ``key`` groups jobs that may share a call (same size and same options)."""

    image: np.ndarray  # (H, W, 3|4) uint8
    mask: np.ndarray | None  # (H, W) uint8, or None to use the image's alpha
    seed: int
    options: dict[str, Any]
    request_id: str | None = None
    key: Hashable = None
    future: asyncio.Future | None = None
    state: str = "queued"
    step: int = 0
    total: int = 0
    abandoned: bool = False

    def release(self) -> None:
        """Drop the pixels once the job is done: only its progress stays readable (no memory kept per request)."""
        self.image = self.mask = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.key is None:
            mask_shape = None if self.mask is None else self.mask.shape
            self.key = (self.image.shape, mask_shape, tuple(sorted(self.options.items())))


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    images: int = 0
    rejected: int = 0
    timed_out: int = 0
    seconds: float = 0.0
    sizes: dict[int, int] = field(default_factory=dict)

    @property
    def images_per_batch(self) -> float:
        return self.images / self.batches if self.batches else 0.0


RunBatch = Callable[[list[Job]], list[Any]]  # results (or exceptions) in job order


class MicroBatcher:
    """Queue of :class:`Job`; ``await submit(job)`` returns what ``run_batch`` produced for it.

    Args:
        run_batch: called on the worker thread with up to ``max_batch`` compatible jobs.
        max_batch: most jobs merged into one call.
        max_wait_s: how long an idle queue waits for companions before running a lone job.
        max_queue: most jobs waiting (not counting the batch running); beyond it, :class:`QueueFull`.
    """

    def __init__(self, run_batch: RunBatch, *, max_batch: int = 8, max_wait_s: float = 0.01,
                 max_queue: int = 32) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        self.run_batch, self.max_batch, self.max_wait_s, self.max_queue = run_batch, max_batch, max_wait_s, max_queue
        self.stats = BatchStats()
        self._pending: deque[Job] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._recent: OrderedDict[str, Job] = OrderedDict()  # request id -> job, for progress polling

    # ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moebius-pipeline")
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="moebius-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self._pending:
            if job.future is not None and not job.future.done():
                job.future.set_exception(RequestTimeout("the server is shutting down"))
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return len(self._pending)

    def progress(self, request_id: str) -> Job | None:
        return self._recent.get(request_id)

    async def submit(self, job: Job, timeout: float) -> Any:
        """Queue ``job`` and wait for its result; raises QueueFull, RequestTimeout or the job's own error."""
        if self._task is None or self._wake is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if len(self._pending) >= self.max_queue:
            self.stats.rejected += 1
            raise QueueFull(self.retry_after())
        job.future = asyncio.get_running_loop().create_future()
        self._pending.append(job)
        self.stats.requests += 1
        if job.request_id:
            self._recent[job.request_id] = job
            while len(self._recent) > 1024:
                self._recent.popitem(last=False)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            job.abandoned = True
            self.stats.timed_out += 1
            if job in self._pending:
                self._pending.remove(job)
                job.release()
            raise RequestTimeout(f"no answer within {timeout:g} s") from None

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue ahead of it at the measured seconds per batch."""
        per_batch = self.stats.seconds / self.stats.batches if self.stats.batches else 5.0
        return max(1, math.ceil(per_batch * (1 + len(self._pending) / self.max_batch)))

    # ------------------------------------------------------------------------------------------------

    async def _worker(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if len(self._pending) < self.max_batch and self.max_wait_s > 0:
                    await asyncio.sleep(self.max_wait_s)  # let companions arrive
                batch = self._take_batch()
                if not batch:
                    continue
                for job in batch:
                    job.state = "running"
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._executor, self.run_batch, batch)
                except Exception as exc:
                    logger.exception("batch of %d failed", len(batch))
                    results = [exc] * len(batch)
                self.stats.seconds += time.perf_counter() - started
                self.stats.batches += 1
                self.stats.images += len(batch)
                self.stats.sizes[len(batch)] = self.stats.sizes.get(len(batch), 0) + 1
                for job, result in zip(batch, results):
                    job.state = "done"
                    job.release()
                    if job.future is None or job.future.done():
                        continue
                    if isinstance(result, BaseException):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)

    def _take_batch(self) -> list[Job]:
        """Remove and return the oldest job and up to ``max_batch - 1`` later jobs with its key."""
        while self._pending and self._pending[0].abandoned:
            self._pending.popleft()
        if not self._pending:
            return []
        key = self._pending[0].key
        batch = [job for job in self._pending if job.key == key and not job.abandoned][: self.max_batch]
        chosen = {id(job) for job in batch}
        self._pending = deque(job for job in self._pending if id(job) not in chosen)
        return batch
