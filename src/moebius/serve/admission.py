"""Admission by work, not by request count: at most ``capacity`` decoded pixels in flight at once.

A request holds its pixels (the larger of its image and mask, read from the headers before anything is
decoded) from the start of decoding until its answer is encoded, so decoding, the pipeline's batch and the
encoded result all fall under one figure and the server's peak memory follows from it. Requests that do not
fit wait in arrival order (a large one is not overtaken forever by small ones), at most ``max_waiting`` of
them; beyond that :class:`QueueFull`, and a wait past its timeout :class:`RequestTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable

from .batching import QueueFull, RequestTimeout


class PixelBudget:
    """Counts decoded pixels in flight against ``capacity``; ``async with budget.admit(pixels, timeout)``.

    Args:
        capacity: most pixels admitted at once; a single request may claim up to all of it.
        max_waiting: most requests waiting for room; beyond it, :class:`QueueFull`.
        retry_after: seconds a refused client is told to wait (the ``Retry-After`` header).
    """

    def __init__(self, capacity: int, max_waiting: int, retry_after: Callable[[], int]) -> None:
        if capacity < 1 or max_waiting < 1:
            raise ValueError("capacity and max_waiting must be >= 1")
        self.capacity, self.max_waiting, self.retry_after = capacity, max_waiting, retry_after
        self.in_flight = 0
        self.peak = 0  # most pixels ever in flight at once
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def admit(self, pixels: int, timeout: float) -> AsyncIterator[None]:
        """Hold ``pixels`` of the budget for the body of the ``async with``."""
        if pixels > self.capacity:
            raise ValueError(f"{pixels} pixels exceed the whole budget of {self.capacity}")
        await self._acquire(pixels, timeout)
        try:
            yield
        finally:
            self._release(pixels)

    async def _acquire(self, pixels: int, timeout: float) -> None:
        if not self._waiting and self.in_flight + pixels <= self.capacity:
            self._take(pixels)
            return
        if len(self._waiting) >= self.max_waiting:
            raise QueueFull(self.retry_after())
        entry = (pixels, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(entry[1]), timeout)
        except BaseException as exc:
            if entry[1].done():  # granted just as the wait ended: hand the pixels back
                self._release(pixels)
            else:
                entry[1].cancel()
                self._waiting.remove(entry)
                self._grant()  # it may have been the head that blocked smaller requests
            if isinstance(exc, asyncio.TimeoutError):
                raise RequestTimeout(f"no answer within {timeout:g} s") from None
            raise

    def _take(self, pixels: int) -> None:
        self.in_flight += pixels
        self.peak = max(self.peak, self.in_flight)

    def _release(self, pixels: int) -> None:
        self.in_flight -= pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.in_flight + self._waiting[0][0] <= self.capacity:
            pixels, future = self._waiting.popleft()
            self._take(pixels)
            future.set_result(None)
