"""Gradio's queue sleeps until there is work (webui/queue_wake.py), on a real Gradio server."""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.util
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gradio as gr
import pytest
from gradio_client import Client

from webui.app import no_matplotlib_search, quiet_queue
from webui.queue_wake import IDLE_S, WAKER, Waker


def test_a_wakeable_sleep_ends_when_woken_and_others_are_untouched() -> None:
    """Checked by what has finished after a few turns of the event loop, never by the clock."""
    waker = Waker()

    async def turns(task: asyncio.Future[object]) -> bool:
        for _ in range(20):
            if task.done():
                break
            await asyncio.sleep(0)
        return task.done()

    async def scenario() -> tuple[bool, bool, bool]:
        idle = asyncio.ensure_future(waker.sleep(IDLE_S))
        await asyncio.sleep(0)  # let it begin waiting
        asleep = not await turns(idle)
        waker.wake()
        woken = await turns(idle)
        plain = asyncio.ensure_future(waker.sleep(10.0))  # another length: asyncio's own sleep
        await asyncio.sleep(0)
        waker.wake()
        untouched = not await turns(plain)
        plain.cancel()
        return asleep, woken, untouched

    # a thread of its own: in the full suite the browser tests' playwright keeps a loop running in this one
    with ThreadPoolExecutor(1) as pool:
        asleep, woken, untouched = pool.submit(asyncio.run, scenario()).result(60)
    assert asleep and woken and untouched
    assert waker.sleeps == 1 and waker.wakes == 1


@pytest.fixture()
def echo_app():
    with gr.Blocks() as blocks:
        box = gr.Textbox()
        out = gr.Textbox()
        box.submit(lambda s: s.upper(), box, out, api_name="echo")
    blocks.queue()
    blocks.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    quiet_queue(blocks)  # as webui.app does: the queue exists once the app is built
    try:
        yield blocks
    finally:
        blocks.close()


def test_the_queue_runs_events_without_polling(echo_app: gr.Blocks) -> None:
    assert echo_app._queue.sleep_when_free is IDLE_S  # this Gradio took the shim
    client = Client(echo_app.local_url, verbose=False)
    assert client.predict("hello", api_name="/echo") == "HELLO"
    wakes = WAKER.wakes
    assert client.predict("again", api_name="/echo") == "AGAIN"
    assert WAKER.wakes > wakes  # the event's arrival woke the queue
    sleeps = WAKER.sleeps
    time.sleep(1.0)
    # Gradio alone sleeps 1 ms between looks (about 1,000 a second); woken by work, an idle queue looks
    # about 1 / IDLE_S times a second
    assert WAKER.sleeps - sleeps <= 3 / IDLE_S


def test_an_event_does_not_search_for_a_missing_matplotlib(echo_app: gr.Blocks) -> None:
    """Gradio imports matplotlib around every event and streamed update; where it is missing, that import
    must fail at once (None in sys.modules), not search sys.path each time."""
    if sys.modules.get("matplotlib", False) is not None and importlib.util.find_spec("matplotlib"):
        pytest.skip("matplotlib is installed here")
    searched: list[str] = []

    class Spy(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
            if name == "matplotlib":
                searched.append(name)

    no_matplotlib_search()  # as webui.app does once the app is built
    spy = Spy()
    sys.meta_path.insert(0, spy)
    try:
        client = Client(echo_app.local_url, verbose=False)
        assert client.predict("hello", api_name="/echo") == "HELLO"
    finally:
        sys.meta_path.remove(spy)
    assert searched == []
