"""A thinking model in the chat tab (an R1-style copy of the default GGUF, a thinking budget of 6): the
thought folds into a collapsible block above the answer, titled with its token count and its duration."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.harness import MODEL, ServerProcess, start_server
from tests.browser.ui import ChatPage
from tests.test_thinking_real import R1_TEMPLATE, with_template

NOTE = "Thinking budget reached; answering now."


@pytest.fixture(scope="module")
def r1_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    r1 = with_template(MODEL, tmp_path_factory.mktemp("r1ui"), "r1.gguf", R1_TEMPLATE)
    base = tmp_path_factory.mktemp("r1-server")
    s = start_server(base, extra_config=f"  path: {r1}\n", env={"LLM_GENERATION__THINKING_BUDGET": "6"})
    yield s
    s.stop()


def test_the_thought_folds_above_the_answer(open_page: Any, r1_server: ServerProcess) -> None:
    chat = open_page(srv=r1_server).goto()
    doc = chat.send("Write a story about a cat.")
    reply = doc["messages"][-1]
    assert NOTE in reply["reasoning"] and reply["content"].strip() and NOTE not in reply["content"]
    assert reply["metrics"]["reasoning_tokens"] == 6
    box = chat.page.locator("#chatbot")
    title = box.get_by_text(re.compile(r"Thought · 6 tokens"))
    title.first.wait_for()
    text = box.inner_text()
    assert re.search(r"Thought · 6 tokens[\s\S]{0,40}\d+(\.\d+)?\s?s", text), text[:600]
    assert text.index("Thought · 6 tokens") < text.index(reply["content"].strip()[:20])
    assert not box.get_by_text(NOTE).first.is_visible(), "the finished thought should be collapsed"
    title.first.click()  # it opens on a click
    box.get_by_text(NOTE).first.wait_for(state="visible")


# --- the chat tab's Thinking row (webui/tabs/chat_thinking.py) ------------------------------------------


def checked(chat: ChatPage, elem_id: str) -> str | None:
    """The value of the checked choice of a Radio."""
    return chat.page.locator(f"#{elem_id} input[aria-checked=true]").first.get_attribute("value")


def pick(chat: ChatPage, elem_id: str, value: str) -> None:
    chat.page.locator(f'#{elem_id} input[value="{value}"]').click()


def enter_budget(chat: ChatPage, text: str) -> None:
    box = chat.page.locator("#chat-thinking-budget input")
    box.fill(text)
    box.press("Enter")


def test_thinking_set_in_the_chat_tab_is_the_chats_own(open_page: Any, r1_server: ServerProcess) -> None:
    chat = open_page(srv=r1_server).goto()
    assert checked(chat, "chat-thinking") == "auto" and chat.value("chat-thinking-budget") == "6"
    pick(chat, "chat-thinking", "off")  # no chat yet: the first message makes one with it
    doc = chat.send("Write a story about a cat.")
    assert doc["params"].get("thinking") == "off", doc["params"]
    reply = doc["messages"][-1]
    assert reply["reasoning"] == "" and reply["metrics"]["reasoning_tokens"] == 0 and reply["content"].strip()

    chat.reload()  # the chat is still open and the row shows its values
    chat.wait_for(lambda: checked(chat, "chat-thinking") == "off", "the chat's Off after a reload")
    chat.open_tab("Sampling")
    chat.wait_for(lambda: checked(chat, "sp-thinking") == "off", "the Sampling tab showing the chat's off")
    assert chat.value("sp-thinking_budget") == "6"
    pick(chat, "sp-thinking", "on")  # and the other way round
    chat.click("sp-apply")
    chat.wait_for(lambda: chat.stored(doc["id"])["params"].get("thinking") == "on", "Apply to save on")
    chat.open_tab("Chat")
    chat.wait_for(
        lambda: checked(chat, "chat-thinking") == "on", "the chat tab showing the Sampling tab's On"
    )

    enter_budget(chat, "3")  # applies to the next turn
    chat.wait_for(lambda: chat.stored(doc["id"])["params"].get("thinking_budget") == 3, "the budget saved")
    doc = chat.send("Write a poem about the sea.")
    assert doc["messages"][-1]["metrics"]["reasoning_tokens"] == 3, doc["messages"][-1]["metrics"]

    for bad in ("-1", "999999999"):  # a clear warning, and nothing changes
        enter_budget(chat, bad)
        chat.wait_toast("0 to 131072")
        chat.wait_for(
            lambda: chat.value("chat-thinking-budget") == "3", "the row to show the budget in effect"
        )
    assert chat.stored(doc["id"])["params"]["thinking_budget"] == 3
