"""Streaming handlers that postprocess their own updates (webui/prepared.py), on a real Gradio server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import gradio as gr
import pytest
from gradio_client import Client

from webui.app import quiet_queue
from webui.prepared import prepare, prepared

THOUGHT = {"title": "Thinking", "status": "done"}


def updates() -> Iterator[Any]:
    """A turn's shape: the chat grows (a thought, markdown, Japanese), the id and status stay, a skip."""
    chat: list[dict[str, Any]] = [{"role": "user", "content": "こんにちは **there**"}]
    yield chat, "s-1", gr.skip()
    chat = [*chat, {"role": "assistant", "content": "hmm", "metadata": THOUGHT}]
    yield chat, "s-1", "*generating*"
    for text in ("Hel", "Hello, ", "Hello, `world`!"):
        yield [*chat, {"role": "assistant", "content": text}], "s-1", "*generating*"
    yield gr.skip()
    yield [*chat, {"role": "assistant", "content": "Hello, `world`!"}], "s-1", gr.update(value="  done  ")


@pytest.fixture()
def turn_app():
    with gr.Blocks() as blocks:
        chatbot = gr.Chatbot()
        sid = gr.BrowserState(None)
        status = gr.Markdown()
        outs = [chatbot, sid, status]
        button = gr.Button()

        def plain() -> Iterator[Any]:
            yield from updates()

        button.click(plain, None, outs, api_name="plain")
        button.click(prepared(plain, outs), None, outs, api_name="prepared", postprocess=False)
    blocks.queue()
    blocks.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    quiet_queue(blocks)
    yield blocks
    blocks.close()


def streamed(client: Client, api_name: str) -> list[Any]:
    job = client.submit(api_name=api_name)
    job.result(timeout=60)
    return [list(update) for update in job.outputs()]


def test_a_prepared_turn_sends_the_page_what_gradio_would(turn_app: gr.Blocks) -> None:
    client = Client(turn_app.local_url, verbose=False)
    plain, ours = streamed(client, "/plain"), streamed(client, "/prepared")
    assert len(plain) >= 5
    assert ours == plain
    # the Chatbot's own format, not what the handler yielded
    assert plain[-1][0][-1]["content"] == [{"type": "text", "text": "Hello, `world`!"}]


def test_a_prepared_turn_takes_no_thread_hop_per_output(
    turn_app: gr.Blocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gradio hops to a worker thread for the generator's next update, and, unless the handler is
    prepared, again for each output's postprocess."""
    client = Client(turn_app.local_url, verbose=False)
    hops: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__qualname__", repr(fn)))
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    n = len(streamed(client, "/plain"))
    plain, hops[:] = list(hops), []
    streamed(client, "/prepared")
    assert sum("postprocess" in hop for hop in plain) >= 2 * n  # the comparison can fail
    assert not any("postprocess" in hop for hop in hops)
    others = [hop for hop in hops if hop != "run_sync_iterator_async"]  # the generator's steps
    assert len(others) <= 3, others  # the login check, the handler's call


def test_closing_a_prepared_handler_closes_the_turn() -> None:
    """Stop or a page that goes away closes the handler: the turn's own finally (its save) runs."""
    closed: list[bool] = []

    def turn() -> Iterator[Any]:
        try:
            while True:
                yield [{"role": "assistant", "content": "…"}], "s-1", "x"
        finally:
            closed.append(True)

    outs = [gr.Chatbot(render=False), gr.BrowserState(render=False), gr.Markdown(render=False)]
    run = prepared(turn, outs)()
    next(run)
    run.close()
    assert closed == [True]


def test_an_update_of_the_wrong_width_is_a_clear_error() -> None:
    outs = [gr.Chatbot(render=False), gr.Markdown(render=False)]
    with pytest.raises(ValueError, match="3 values for 2 outputs"):
        prepare(([], "a", "b"), outs)
    with pytest.raises(TypeError, match="gr.update"):
        prepare(([], gr.Markdown("x", render=False)), outs)
