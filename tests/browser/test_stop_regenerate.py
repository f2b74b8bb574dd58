"""Stop mid-reply, Regenerate, browse versions with ◀ ▶, Continue, Delete: on a server with long replies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.harness import ServerProcess, start_server
from tests.browser.ui import ChatPage

LONG = "Count from 1 to 100, one number per line."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # A grammar that cannot end before 120 tokens, so Stop always lands mid-reply however loaded the machine.
    long_replies = (
        "generation:\n  max_tokens: 120\n  temperature: 0\n  seed: 1\n  grammar: 'root ::= [a-z ]{600}'\n"
    )
    s = start_server(tmp_path_factory.mktemp("browser-long"), max_tokens=120, extra_config=long_replies)
    yield s
    s.stop()


def _stop_mid_reply(chat: ChatPage) -> dict[str, Any]:
    """Send a long prompt, press Stop once it streams; the page must show the saved, stopped reply, with
    no error badge and no reload."""
    chat.record_states()
    chat.type_and_enter(LONG)
    chat.wait_for(lambda: len([s for s in chat.states() if s]) >= 3, "the reply to start streaming")
    chat.click("stop")
    doc = chat.wait_idle(lambda d: d["messages"][-1]["stopped"])
    assert chat.error_badges() == [], f"Stop showed an error: {chat.error_badges()}"
    return doc


def test_stop_then_regenerate_then_browse_versions(chat: ChatPage) -> None:
    doc = _stop_mid_reply(chat)
    stopped = doc["messages"][-1]
    assert stopped["metrics"]["finish_reason"] == "cancelled"
    assert stopped["metrics"]["completion_tokens"] < 120, "Stop did not end the reply early"
    partial = stopped["content"]
    assert partial and chat.bots() == [partial]

    chat.click("regenerate")
    doc = chat.wait_idle(
        lambda d: len(d["messages"][-1]["alternatives"]) == 2 and not d["messages"][-1]["stopped"]
    )
    last = doc["messages"][-1]
    assert last["version"] == 1 and last["alternatives"][0]["content"] == partial
    full = last["content"]
    assert len(full) > len(partial) and last["metrics"]["finish_reason"] in ("stop", "length")
    assert chat.bots() == [full]
    assert "2/2" in chat.status()

    chat.click("prev-alt")
    chat.wait_for(lambda: chat.bots() == [partial], "◀ to show the first version")
    assert "1/2" in chat.status()
    assert chat.stored()["messages"][-1]["version"] == 0
    chat.click("next-alt")
    chat.wait_for(lambda: chat.bots() == [full], "▶ to show the second version")
    assert "2/2" in chat.status() and chat.stored()["messages"][-1]["version"] == 1
    chat.click("next-alt")  # wraps around
    chat.wait_for(lambda: chat.bots() == [partial], "▶ to wrap to the first version")

    chat.reload()  # the choice of version is saved
    chat.wait_for(lambda: chat.bots() == [partial], "the chosen version after a reload")
    assert "1/2" in chat.status()


def test_continue_a_stopped_reply_then_delete_the_exchange(chat: ChatPage) -> None:
    doc = _stop_mid_reply(chat)
    partial = doc["messages"][-1]["content"]
    chat.click("continue")
    doc = chat.wait_idle(
        lambda d: not d["messages"][-1]["stopped"] and len(d["messages"][-1]["content"]) > len(partial)
    )
    assert doc["messages"][-1]["content"].startswith(partial)
    assert len(doc["messages"]) == 2, "Continue must extend the reply, not add one"
    chat.click("delete-last")
    chat.wait_for(lambda: chat.users() == [] and chat.bots() == [], "the exchange to disappear")
    assert chat.stored(doc["id"])["messages"] == []


def test_text_typed_while_a_reply_streams_stays_in_the_box(chat: ChatPage) -> None:
    """Users write their next message while the reply streams: no update, nor the end, may wipe it."""
    chat.record_states()
    chat.type_and_enter(LONG)
    chat.wait_for(lambda: chat.page.locator("#message textarea").input_value() == "", "the box to clear")
    chat.wait_for(lambda: len([s for s in chat.states() if s]) >= 2, "the reply to start streaming")
    box = chat.page.locator("#message textarea")
    box.press_sequentially("next question", delay=20)
    doc = chat.wait_idle(lambda d: d["messages"][-1]["role"] == "assistant" and not chat.busy())
    assert doc["messages"][-1]["content"]
    chat.wait_for(lambda: not chat.busy(), "the turn to end")
    assert box.input_value() == "next question"


def test_enter_while_a_reply_streams_keeps_the_message_in_the_box(chat: ChatPage) -> None:
    """Send takes the text out of the box in the page; while the page's reply streams the turn does not go
    out, and the text comes back into the box instead of being lost."""
    chat.type_and_enter(LONG)
    chat.wait_for(lambda: chat.page.locator("#message textarea").input_value() == "", "the box to clear")
    chat.wait_for(lambda: chat.busy() and chat.bots() and chat.bots()[-1], "the reply to start streaming")
    box = chat.page.locator("#message textarea")
    box.fill("not yet")
    box.press("Enter")
    doc = chat.wait_idle(lambda d: d["messages"][-1]["role"] == "assistant" and not chat.busy())
    chat.wait_for(lambda: box.input_value() == "not yet", "the message to come back into the box")
    messages = chat.stored(doc["id"])["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [LONG]
    assert not messages[-1].get("stopped") and not messages[-1].get("interrupted"), messages[-1]
    chat.wait_for(lambda: len(chat.bots()) == 1 and chat.bots()[0], "the whole reply on the page")


def test_stop_again_and_again_never_shows_an_error(chat: ChatPage) -> None:
    """Stop races the turn's own end (Gradio's cancel used to land after it: an Error badge on the chat,
    the message box and the status line). Stops at different points of the reply; each leaves the saved,
    stopped reply on screen."""
    for i in range(4):
        chat.type_and_enter(f"{LONG} ({i})")
        chat.wait_for(
            lambda n=i + 1: len(chat.bots()) == n and chat.bots()[-1].strip(), "the reply to stream"
        )
        chat.page.wait_for_timeout(150 * i)
        chat.click("stop")
        doc = chat.wait_idle(
            lambda d, i=i: d["messages"][-1]["stopped"] and f"({i})" in d["messages"][-2]["content"]
        )
        assert chat.error_badges() == [], f"Stop {i + 1} showed an error: {chat.error_badges()}"
        assert chat.bots()[-1] == doc["messages"][-1]["content"]
