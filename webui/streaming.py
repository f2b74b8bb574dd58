"""Bridge a blocking engine stream (a worker thread) to asyncio, with cancel on disconnect."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

_END = object()


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
