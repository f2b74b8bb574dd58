"""Bridge a blocking engine stream (a worker thread) to asyncio, with cancel on disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from starlette.requests import Request

_END = object()
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
            for item in make(cancel):
                put(item)
                if cancel.is_set():
                    break
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


def run_ahead(events: Iterator[T], cancel: threading.Event) -> Iterator[T]:
    """Start iterating `events` in a worker thread now, and return an iterator over what it produces.

    Gradio resumes a generator handler only after it has sent the previous update, so the chat tab starts
    the turn with this before its first update (the user's message), and the prompt is evaluated while
    that update travels. Closing the returned iterator (Stop, a closed tab) sets `cancel` and waits for the
    worker, which ends within one token and closes `events` itself: the turn has saved when this returns.
    """
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def work() -> None:
        try:
            for item in events:
                items.put(item)
                if cancel.is_set():
                    break
        except BaseException as exc:  # re-raised in the consumer
            items.put(_Raised(exc))
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
            items.put(_END)

    thread = threading.Thread(target=work, name="turn-ahead", daemon=True)
    thread.start()

    def consume() -> Iterator[T]:
        try:
            while (item := items.get()) is not _END:
                if isinstance(item, _Raised):
                    raise item.exc
                yield item
        finally:
            if thread.is_alive():
                cancel.set()
                thread.join()

    return consume()


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
