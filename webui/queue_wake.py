"""Gradio's queue, woken by its work instead of polling for it.

Gradio 6's `Queue.start_processing` looks for an event to start in a loop that sleeps `sleep_when_free`
(1 ms) whenever there is none, so an idle server wakes up a thousand times a second. At 5 ms that still
cost about 2% of a core, idle or streaming: time taken from the model's threads on a small machine, and a
laptop's battery. Here those sleeps end as soon as there is work: an event arrives (`Queue.push`) or a
job ends and frees a concurrency slot (`Queue.process_events`). They last at most IDLE_S otherwise.

`gradio.queueing` sees a stand-in for the `asyncio` module whose `sleep` waits on a wake-up when it is
given this module's IDLE_S object itself (an identity check, so no other sleep of gradio's is touched).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from typing import Any

IDLE_S = 0.25  # the longest an idle queue sleeps; this very object marks the sleeps to wake


class Waker:
    """Sleeps of IDLE_S that end early when `wake()` runs in the same event loop."""

    def __init__(self) -> None:
        self._events: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = (
            weakref.WeakKeyDictionary()
        )
        self.sleeps = 0  # how many wakeable sleeps began (tests: an idle queue must not poll)
        self.wakes = 0

    def wake(self) -> None:
        event = self._events.pop(asyncio.get_running_loop(), None)
        if event is not None:
            self.wakes += 1
            event.set()

    async def sleep(self, delay: float, result: Any = None) -> Any:
        if delay is not IDLE_S:
            return await asyncio.sleep(delay, result)
        self.sleeps += 1
        loop = asyncio.get_running_loop()
        event = self._events.get(loop)
        if event is None:
            event = self._events[loop] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), delay)
        return result


class _AsyncioWithWaker:
    """What gradio.queueing calls `asyncio`: the module itself, with the waker's sleep."""

    def __init__(self, waker: Waker) -> None:
        self.sleep = waker.sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


WAKER = Waker()


def wake_on_work(queue: Any) -> bool:
    """Make `queue` (a gradio Queue) sleep until woken when idle. False where this Gradio differs."""
    from gradio import queueing

    if not all(hasattr(queue, a) for a in ("sleep_when_free", "push", "process_events")):
        return False
    if not isinstance(queueing.asyncio, _AsyncioWithWaker):
        queueing.asyncio = _AsyncioWithWaker(WAKER)  # type: ignore[assignment]
    queue.sleep_when_free = IDLE_S
    queue.push = _waking(queue.push)
    queue.process_events = _waking(queue.process_events)
    return True


def _waking(method: Any) -> Any:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        finally:
            WAKER.wake()

    return call
