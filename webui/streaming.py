"""Bridge a blocking engine stream (a worker thread) to asyncio, with cancel on disconnect."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

_END = object()


async def run_stream(make: Callable[[threading.Event], Iterator[Any]], cancel: threading.Event) -> AsyncIterator[Any]:
    """Yield items of `make(cancel)` produced in a worker thread.

    If the consumer stops early (client disconnect, task cancelled), `cancel` is set and the worker
    ends within one token, releasing the model.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def work() -> None:
        try:
            for item in make(cancel):
                loop.call_soon_threadsafe(queue.put_nowait, item)
                if cancel.is_set():
                    break
        except BaseException as exc:  # delivered to the consumer, which turns it into an error event
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    thread = threading.Thread(target=work, name="engine-stream", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
