"""Dynamic batching: concurrent requests share one model call.

A :class:`Batcher` wraps a function ``fn(items) -> results`` (one result per item, in
order) and lets many coroutines ``await batcher.submit(item)`` at once. The policy:

- **A lone request does not wait.** The batch that a request joins closes when it holds
  ``max_batch`` items, when ``wait_ms`` have passed since its oldest item arrived, or when
  two passes of the event loop bring no new item (nobody else is ready). So one user
  clicking alone pays a few loop passes (tens of microseconds), never the deadline.
- **Requests that arrive while a batch is computed wait for the next one.** When a batch
  finishes, the next one takes everything that queued meanwhile (up to ``max_batch``); a
  crowd therefore fills batches by itself, and ``wait_ms`` only caps how long one batch keeps
  gathering while new requests are still streaming in.
- **Each request gets exactly its own result back**: result k of ``fn`` goes to item k.
- **Failures stay where they happen.** ``check(item)`` runs at submission, so a malformed
  item raises to its own caller and never enters a batch. An exception from ``fn`` fails
  every request of that batch with :class:`BatchFailed` and nothing else; the next batch
  runs as usual. A caller that gives up (its task is cancelled) is skipped if its batch has
  not started yet.
- **Where the work runs** is ``run(fn, items)``, an awaitable: the studio passes
  :meth:`tlgan.studio.server.Studio.call`, which computes quick batches inline on the event loop
  and slow ones (a large generator, a model held by an inversion) in a worker thread.

Per-row results of a batched forward pass are not always bit-identical to a batch-1 pass:
CPU and GPU kernels choose their blocking, and so their summation order, by batch size.
For the bundled models the difference is about 1e-6 (a 64 px PNG differs from the batch-1
one by one level in a few pixels, for a few faces in a hundred). What does hold, and what
the tests check bit for bit, is that a row depends only on its own input, the batch size
and its slot: never on what the other requests in the batch asked for.

A batcher keeps one queue per event loop (uvicorn has one; a test client may start one per
request), so it can be shared by code running on different loops.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 8
"""Largest batch. The bundled generator does 8 faces in about 2.7x the time of one (2 CPU cores,
see BENCHMARKS.md), and larger batches add latency faster than throughput."""
DEFAULT_WAIT_MS = 4.0
"""How long a batch may keep gathering requests after its oldest one arrived."""


class BatchFailed(RuntimeError):
    """The model call of a batch raised; every request of that batch gets this error."""

    def __init__(self, size: int, cause: BaseException):
        self.size = size
        self.cause = cause
        super().__init__(
            f"the model failed on a batch of {size} request(s) ({type(cause).__name__}: "
            f"{str(cause)[:200]}); other requests are not affected, so retrying usually works; "
            f"the server log has the details"
        )


class BatcherClosed(RuntimeError):
    """The batcher was closed (the server is shutting down) before the request was computed."""

    def __init__(self):
        super().__init__(
            "the studio is shutting down and did not compute this request; retry once it is back"
        )


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future
    arrived: float


@dataclass
class _LoopQueue:
    pending: deque[_Pending] = field(default_factory=deque)
    task: asyncio.Task | None = None


async def _inline(fn: Callable[[list[Any]], Sequence[Any]], items: list[Any]) -> Sequence[Any]:
    return fn(items)


class Batcher:
    """Collect concurrent ``submit(item)`` calls into batches for ``fn(items) -> results``.

    ``max_batch`` >= 1 bounds a batch; ``wait_ms`` >= 0 bounds how long a batch gathers;
    ``check(item)`` (optional) validates one item at submission and may return a cleaned
    copy; ``run(fn, items)`` (optional, awaitable) is where ``fn`` is called (default: inline).
    After :meth:`close`, ``submit`` raises :class:`BatcherClosed`.
    Counters ``batches_`` and ``items_`` say how many batches and items have been computed.
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        wait_ms: float = DEFAULT_WAIT_MS,
        check: Callable[[Any], Any] | None = None,
        run: Callable[..., Awaitable[Sequence[Any]]] | None = None,
        name: str = "batch",
    ):
        from tlgan.errors import TlganError

        if int(max_batch) < 1:
            raise TlganError(f"max_batch must be at least 1 (1 = no batching), not {max_batch!r}")
        if not float(wait_ms) >= 0:
            raise TlganError(f"batch wait must be >= 0 ms, not {wait_ms!r}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.wait_ms = float(wait_ms)
        self.check = check
        self.run = run or _inline
        self.name = name
        self.closed = False
        self.batches_ = 0
        self.items_ = 0
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = (
            weakref.WeakKeyDictionary()
        )

    async def submit(self, item: Any) -> Any:
        """The result of ``fn`` for ``item``, computed in a batch with whatever else is queued."""
        if self.closed:
            raise BatcherClosed()
        if self.check is not None:
            item = self.check(item)  # a malformed item fails here, alone
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue()
        future = loop.create_future()
        queue.pending.append(_Pending(item, future, time.perf_counter()))
        if queue.task is None or queue.task.done():
            queue.task = loop.create_task(self._drain(queue), name=f"tlgan-{self.name}-batcher")
        return await future

    def pending(self) -> int:
        """Items queued on every loop and not yet in a batch."""
        return sum(len(q.pending) for q in list(self._queues.values()))

    async def _drain(self, queue: _LoopQueue) -> None:
        """Run batches while items are queued on this loop; then end (the next submit restarts it)."""
        batch: list[_Pending] = []
        try:
            while queue.pending and not self.closed:
                await self._gather(queue)
                batch = []
                while queue.pending and len(batch) < self.max_batch:
                    entry = queue.pending.popleft()
                    if not entry.future.done():  # a cancelled caller is skipped
                        batch.append(entry)
                if batch:
                    await self._compute(batch)
                batch = []
        except BaseException:
            # Cancelled (the loop is going away): nobody will compute what is left.
            _fail_all(batch + list(queue.pending))
            queue.pending.clear()
            raise
        if self.closed:
            _fail_all(list(queue.pending))
            queue.pending.clear()

    async def _gather(self, queue: _LoopQueue) -> None:
        """Let the loop bring in more items: until full, quiet for two passes, or past the deadline."""
        deadline = queue.pending[0].arrived + self.wait_ms / 1000.0
        quiet = 0
        while len(queue.pending) < self.max_batch and quiet < 2:
            seen = len(queue.pending)
            await asyncio.sleep(0)  # one pass: ready handlers run up to their submit()
            if not queue.pending:
                return
            quiet = quiet + 1 if len(queue.pending) == seen else 0
            if time.perf_counter() >= deadline:
                return

    async def _compute(self, batch: list[_Pending]) -> None:
        items = [entry.item for entry in batch]
        try:
            results = await self.run(self.fn, items)
            results = list(results)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name} returned {len(results)} results for {len(items)} items")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the batch's callers get it, the server goes on
            log.exception("studio: a batch of %d for the %s failed", len(items), self.name)
            failure = BatchFailed(len(items), exc)
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(failure)
            return
        finally:
            self.batches_ += 1
            self.items_ += len(items)
        for entry, result in zip(batch, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)

    async def aclose(self) -> None:
        """Stop: queued requests on this loop fail with BatcherClosed; a running batch finishes."""
        self.closed = True
        for queue in list(self._queues.values()):
            task = queue.task
            for entry in list(queue.pending):
                if not entry.future.done():
                    try:
                        entry.future.get_loop().call_soon_threadsafe(_fail_closed, entry.future)
                    except RuntimeError:  # its loop is already closed
                        pass
            queue.pending.clear()
            if task is not None and not task.done():
                try:
                    if task.get_loop() is asyncio.get_running_loop():
                        await asyncio.wait([task], timeout=10)
                except RuntimeError:
                    pass


def _fail_all(entries: list[_Pending]) -> None:
    for entry in entries:
        _fail_closed(entry.future)


def _fail_closed(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(BatcherClosed())
