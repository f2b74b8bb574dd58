"""Gradio's queue sleeps until there is work (webui/queue_wake.py), on a real Gradio server."""

from __future__ import annotations

import asyncio
import time

import gradio as gr
import pytest
from gradio_client import Client

from webui.app import quiet_queue
from webui.queue_wake import IDLE_S, WAKER, Waker


def test_a_wakeable_sleep_ends_when_woken_and_others_are_untouched() -> None:
    waker = Waker()

    async def scenario() -> tuple[float, float]:
        started = time.perf_counter()
        sleeper = asyncio.ensure_future(waker.sleep(IDLE_S))
        await asyncio.sleep(0)  # let it begin waiting
        waker.wake()
        await sleeper
        woken = time.perf_counter() - started
        started = time.perf_counter()
        waker.wake()  # nothing waits: no effect on a plain sleep
        await waker.sleep(0.05)
        return woken, time.perf_counter() - started

    woken, plain = asyncio.run(scenario())
    assert woken < IDLE_S / 2 and waker.wakes == 1
    assert plain >= 0.05 and waker.sleeps == 1  # a sleep of another length is asyncio's own


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
