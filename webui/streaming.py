"""Bridge a blocking engine stream (a worker thread) to asyncio, with cancel on disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

from starlette.requests import Request

_END = object()
CLOSE_WAIT_S = 2.0  # the longest RunAhead.close() waits for the turn to end
log = logging.getLogger(__name__)
T = TypeVar("T")


async def run_stream(
    make: Callable[[threading.Event], Iterator[Any]], cancel: threading.Event
) -> AsyncIterator[Any]:
    """Yield items of `make(cancel)` produced in a worker thread.

    If the consumer stops early (client disconnect, task cancelled), `cancel` is set and the worker
    ends within one token, releasing the model.

    The worker appends to a deque and wakes the event loop only when no wake-up is already pending,
    so a burst of tokens costs one loop wake-up, and the decode thread never waits on the loop.
    """
    loop = asyncio.get_running_loop()
    items: deque[Any] = deque()
    ready = asyncio.Event()
    lock = threading.Lock()
    pending = False  # a wake-up is scheduled and the consumer has not reset it yet

    def put(item: Any) -> None:
        nonlocal pending
        items.append(item)
        with lock:
            if pending:
                return
            pending = True
        try:
            loop.call_soon_threadsafe(ready.set)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    def work() -> None:
        try:
            for item in make(cancel):  # ends within one token of `cancel`, having saved what it has
                put(item)
        except BaseException as exc:  # delivered to the consumer, which turns it into an error event
            put(exc)
        finally:
            put(_END)

    thread = threading.Thread(target=work, name="engine-stream", daemon=True)
    thread.start()
    try:
        while True:
            await ready.wait()
            ready.clear()
            with lock:
                pending = False  # reset before draining: anything appended from now on wakes us again
            while items:
                item = items.popleft()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:
        cancel.set()


@contextlib.asynccontextmanager
async def cancel_on_disconnect(
    request: Request, cancel: threading.Event, every: float = 0.25
) -> AsyncIterator[None]:
    """While the block runs, set `cancel` if the client goes away.

    For replies sent whole (not streamed): nothing is written until the end, so without this a client that
    gave up would hold the model until its reply was complete.
    """

    async def watch() -> None:
        while not cancel.is_set():
            if await request.is_disconnected():
                cancel.set()
                return
            await asyncio.sleep(every)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()


class RunAhead(Generic[T]):
    """Iterate `events` in a worker thread from now on; the consumer takes what has piled up.

    Gradio resumes a generator handler only after it has sent the previous update, so the chat tab starts
    the turn with this before its first update (the user's message), and the prompt is evaluated while
    that update travels. The consumer is woken only by an `urgent` item or the end, and otherwise takes
    a batch when it wants one, so a stream of tokens costs no thread wake-up per token. `close()` (Stop,
    a closed tab) sets `cancel` and waits for the worker; `events` must end within one token once `cancel`
    is set (a turn does, and saves what it has), and the worker closes it: the turn has saved when this
    returns, unless that takes over CLOSE_WAIT_S (the turn then saves when it ends).
    """

    def __init__(
        self, events: Iterator[T], cancel: threading.Event, urgent: Callable[[T], bool] = lambda _: True
    ) -> None:
        self._events, self._cancel, self._urgent = events, cancel, urgent
        self._items: list[T] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._finished = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="turn-ahead", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            for item in self._events:
                with self._lock:
                    self._items.append(item)
                if self._urgent(item):
                    self._wake.set()
                # No break on cancel: the turn ends itself within one token, and what it yields then
                # (the cancelled reply's metrics) must still be saved.
        except BaseException as exc:  # raised in the consumer, after the items before it
            self._error = exc
        finally:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
            with self._lock:
                self._finished = True
            self._wake.set()

    def put(self, item: T) -> None:
        """Add an item from another thread (the turn's own, while it waits on something), and wake the
        consumer for it."""
        with self._lock:
            self._items.append(item)
        self._wake.set()

    @property
    def done(self) -> bool:
        """The worker has ended, and every item (and its exception, if any) was taken."""
        with self._lock:
            return self._finished and not self._items and self._error is None

    def take(self, timeout: float | None) -> list[T]:
        """Wait up to `timeout` for an urgent item or the end, then return every item not taken yet.
        The worker's exception, if any, is raised once its items are all taken."""
        self._wake.wait(timeout)
        self._wake.clear()
        with self._lock:
            items, self._items = self._items, []
            finished = self._finished
        if finished:
            self._wake.set()  # nothing more will come: the next take returns at once
        if not items and finished and self._error is not None:
            error, self._error = self._error, None
            raise error
        return items

    def close(self) -> None:
        if self._thread.is_alive():
            self._cancel.set()
            # Gradio closes a handler on its event loop (a page that went away mid-turn): waiting there
            # for a tool call or a long prompt chunk to end would hold every page still
            self._thread.join(CLOSE_WAIT_S)
            if self._thread.is_alive():
                log.info("a closed turn is still ending (it saves when it does)")
